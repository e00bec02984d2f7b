"""The inference and signal service: ticks → features → model → signal, served over gRPC.

Data flows one way (DESIGN.md): `state` (preallocated struct-of-arrays per symbol) →
`features` (Numba kernels, one jitted call per batch) → `model` contract and
`inference` backends behind the `batcher` → `signals` → `server` (gRPC).
"""

__version__ = "0.1.0"
