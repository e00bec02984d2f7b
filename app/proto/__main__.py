"""``python -m app.proto``: generate the gRPC stubs of signals.proto (``make proto``)."""

from app.proto import GENERATED, PROTO_DIR, generate

generate()
print(f"generated {', '.join(GENERATED)} in {PROTO_DIR}")
