"""Local KServe-v2 serving of the signal model with MLServer (Triton stands in for it in prod).

``runtime`` is the MLServer custom runtime and is imported only inside the MLServer
process: MLServer and ``tritonclient.grpc`` register the same protobuf package
(``inference``) and cannot share a process. ``launch`` writes MLServer's settings and
runs it as a child process; it imports neither.
"""
