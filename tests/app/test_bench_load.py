"""`bench/load.py`'s essential server: the service's own parts doing what its promises need
(apply with the fused model, a durable spool record before the ack, reads of the latest
signal), so the bench's reference does the work it claims to."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from app.model.manifest import ModelArtifacts
from app.server import Received
from app.settings.spool import SpoolConfig
from app.spool import Spool
from bench import load
from tests.app.conftest import run

pb2 = load.pb2


def tick_batch(batch_id: int, start_ns: int, n: int = 50) -> Received:
    """``n`` ticks of symbol 7, a millisecond apart, as the server receives them."""
    rng = np.random.default_rng(batch_id)
    message = pb2.TickBatch(
        symbol=[7] * n, price=(100 + np.cumsum(rng.normal(0, 0.05, n))).round(2).tolist(),
        size=rng.integers(1, 500, n).astype(float).tolist(),
        ts_ns=(start_ns + np.arange(n, dtype=np.int64) * 1_000_000).tolist(), batch_id=batch_id,
    )  # fmt: skip
    return Received(message, message.SerializeToString())


def test_essential_server_applies_spools_then_answers_reads(
    model: ModelArtifacts, tmp_path: Path
) -> None:
    config = tmp_path / "essential.yaml"
    config.write_text(load.service_yaml(model.root, tmp_path / "pub", publishing=False))
    start_ns = time.time_ns() - 60_000_000_000
    batches = [tick_batch(i + 1, start_ns + i * 50_000_000) for i in range(4)]

    async def scenario() -> tuple[list[object], object, object]:
        servicer = load.EssentialServicer(config)
        before = await servicer.GetSignal(pb2.SignalRequest(symbol=7), None)
        acks = [await servicer.IngestTicks(batch, None) for batch in batches]
        after = await servicer.GetSignal(pb2.SignalRequest(symbol=7), None)
        await servicer.spool.close()
        return acks, before, after

    acks, before, after = run(scenario())
    assert [a.accepted for a in acks] == [50] * 4  # type: ignore[attr-defined]
    assert acks[-1].signals == 1  # type: ignore[attr-defined]  # warm by the last batch
    assert not isinstance(before, bytes)  # no signal yet: the floor's answer
    assert isinstance(after, bytes)
    signal = pb2.Signal.FromString(after)
    assert signal.symbol == 7 and signal.ts_ns == batches[-1].message.ts_ns[-1]
    # Every batch was made durable before its ack, as it came.
    spool = Spool(SpoolConfig(), tmp_path / "pub-spool")  # where `service_yaml` puts it
    recovered = spool.open().records
    run(spool.close())
    assert [payload for _, payload in recovered] == [b.data for b in batches]
