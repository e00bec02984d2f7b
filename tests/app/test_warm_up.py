"""The server's warm-up calls every compiled kernel a request runs: a lazily typed kernel is
loaded from Numba's cache on its first call (~45 ms for the request path's), and a new
process's first request must not wait for that. Each case runs in a fresh process, since a
kernel that another test already called is loaded in this one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.model.manifest import ModelArtifacts

REPO = Path(__file__).resolve().parents[2]

# Warm up, then serve warm symbols' batches, a read of a signal and the data path's delivery;
# prints the kernels that gained a compiled signature meanwhile (name -> how many).
SCRIPT = """
import asyncio, json, sys, time
from pathlib import Path

import numpy as np
from numba.core.registry import CPUDispatcher

from app.config import AppConfig
from app.proto import load
from app.server import Received, SignalServer, build_runtime

pb2, _ = load()
model_dir, work, backend = sys.argv[1], Path(sys.argv[2]), sys.argv[3]


def kernels():
    return {f"{name}.{attr}": len(value.signatures)
            for name, module in list(sys.modules.items()) if name.startswith("app")
            for attr, value in list(vars(module).items()) if isinstance(value, CPUDispatcher)}


class Context:
    def time_remaining(self):
        return 10.0

    def invocation_metadata(self):
        return ()

    async def abort(self, code, details, metadata=()):
        raise RuntimeError(details)


async def main():
    config = AppConfig.model_validate({
        "features": {"n_symbols": 8},
        "model": {"dir": model_dir, "build_if_missing": False, "backend": backend},
        "server": {"port": 0}, "telemetry": {"metrics_port": None},
        "spool": {"dir": str(work / "spool")}, "publish": {"local_dir": str(work / "publish")},
    })
    server = SignalServer(config, build_runtime(config))
    await server.start()  # the warm-up
    before = kernels()
    servicer, start = server.servicer, time.time_ns() - 60_000_000_000
    for b in range(4):
        n = 60
        message = pb2.TickBatch(
            symbol=[i % 3 for i in range(n)], price=[100 + (i * 7 % 11) / 10 for i in range(n)],
            size=[1.0 + i % 5 for i in range(n)],
            ts_ns=[start + (b * n + i) * 1_000_000 for i in range(n)], batch_id=b + 1,
            producer="warm-up-test")
        ack = (await servicer.IngestTicks(Received(message, message.SerializeToString()),
                                          Context())).ack
    assert ack.signals == 3, ack
    signal = pb2.Signal.FromString(await servicer.GetSignal(pb2.SignalRequest(symbol=1),
                                                            Context()))
    assert signal.symbol == 1, signal
    server.runtime.ingestor.flush_deliveries()
    await server.stop(grace_s=1.0)
    after = kernels()
    print(json.dumps({k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}))


asyncio.run(main())
"""


@pytest.mark.parametrize("backend", ["fused", "onnxruntime"])
def test_after_the_warm_up_requests_load_no_kernel(
    model: ModelArtifacts, tmp_path: Path, backend: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(model.root), str(tmp_path), backend],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded == {}, f"kernels first loaded by a request, not by the warm-up: {loaded}"
