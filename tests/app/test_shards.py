"""Shards: the stable hash, the config, leases and fencing, snapshots, refusals, and three
service processes as shards (one killed, one added) giving exactly one engine's signals."""

from __future__ import annotations

import asyncio
import hashlib
import re
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from pydantic import SecretStr

from app.client import SignalClient
from app.config import AppConfig, ConfigError, load_config
from app.features import FeatureEngine
from app.lease import Fenced, JournalFull, Lease, LeaseStore
from app.model.build import ModelArtifacts
from app.proto import load as load_stubs
from app.server import SignalServer, build_runtime
from app.settings.cache import RedisConfig
from app.shards import ShardSnapshot, ShardTable, shard_of
from app.signals import Signal
from app.synthetic import TickColumns, synthetic_ticks
from tests.app.conftest import ServiceProcess, run
from tests.app.redis_cluster import PASSWORD, LocalRedisCluster

pb2, pb2_grpc = load_stubs()

# symbol -> (first 8 bytes of SHA-256 of its UTF-8 name, as `sha256sum` prints them; its
# shard of 7, of 16, of 256). A client in any language must reproduce this table.
HASH_TABLE = {
    "0": ("5feceb66ffc86f38", 3, 8, 56),
    "1": ("6b86b273ff34fce1", 2, 1, 225),
    "2": ("d4735e3a265e16ee", 3, 14, 238),
    "17": ("4523540f1504cd17", 4, 7, 23),
    "999": ("83cf8b609de60036", 6, 6, 54),
    "AAPL": ("1eb44d625271a4eb", 1, 11, 235),
    "MSFT": (hashlib.sha256(b"MSFT").hexdigest()[:16], 2, 1, 225),
}


@pytest.mark.parametrize("symbol", sorted(HASH_TABLE))
def test_shard_of_is_the_documented_hash(symbol: str) -> None:
    prefix, of7, of16, of256 = HASH_TABLE[symbol]
    assert hashlib.sha256(symbol.encode()).hexdigest()[:16] == prefix
    assert (shard_of(symbol, 7), shard_of(symbol, 16), shard_of(symbol, 256)) == (of7, of16, of256)
    assert int(prefix, 16) % 16 == of16
    assert shard_of(symbol, 1) == 0


def test_an_id_is_its_decimal_name_and_the_table_agrees() -> None:
    assert shard_of(17, 16) == shard_of("17", 16) == 7
    table = ShardTable(1000, 16)
    ids = np.array([17, 0, 999, 17, 2], np.int32)
    assert table.of(ids).tolist() == [7, 8, 6, 7, 14]
    members = table.members(7)
    assert 17 in members and all(shard_of(int(s), 16) == 7 for s in members)
    sizes = [table.members(s).size for s in range(16)]
    assert sum(sizes) == 1000 and min(sizes) > 1000 / 16 / 2  # spread, not lumped


@pytest.mark.parametrize("shards", [0, -1, 4097])
def test_a_shard_count_out_of_range_is_refused(shards: int) -> None:
    with pytest.raises(ValueError, match=f"shards = {shards}: must be 1 to 4096"):
        shard_of("1", shards)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"sharding.enabled": True}, "sharding.enabled: needs cache.redis"),
        ({"sharding.shards": 0}, "sharding.shards: "),
        (
            {"sharding.lease_ttl_s": 3, "sharding.renew_interval_s": 2},
            "sharding.renew_interval_s: must be at most a third of lease_ttl_s (3 s)",
        ),
        ({"sharding.advertise": "no port"}, "sharding.advertise: "),
    ],
)
def test_bad_sharding_config_names_the_key(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, overrides)


def test_forwarding_is_refused_beside_server_tls(tmp_path: Path) -> None:
    pem = tmp_path / "server.pem"
    pem.write_text("not read by the check")
    redis = {"nodes": ["127.0.0.1:7000"]}
    tls = {"cert_file": str(pem), "key_file": str(pem)}
    with pytest.raises(ConfigError, match=r"sharding\.forward: replicas forward .* plaintext"):
        load_config(None, {"sharding.enabled": True, "cache.redis": redis, "server.tls": tls})
    config = load_config(None, {"sharding.enabled": True, "sharding.forward": False,
                                "cache.redis": redis, "server.tls": tls})  # fmt: skip
    assert config.sharding.enabled and not config.sharding.forward


# --- the lease: one holder, fenced writes (real Redis Cluster) ---------------------------------


def _store(cluster: LocalRedisCluster, prefix: str) -> LeaseStore:
    config = RedisConfig(nodes=cluster.startup_nodes, auth="password", password=SecretStr(PASSWORD))
    return LeaseStore.from_config(config, prefix)


def test_a_lease_is_held_once_and_a_late_writer_is_fenced(redis_cluster: LocalRedisCluster) -> None:
    redis_cluster.ensure_healthy()
    prefix = f"t-{uuid.uuid4().hex[:8]}"

    async def scenario() -> None:
        a, b = _store(redis_cluster, prefix), _store(redis_cluster, prefix)
        try:
            # Many replicas racing for one free shard: exactly one gets it (a TTL no loaded
            # machine outlasts during the race, so no lease expires inside it).
            got = await asyncio.gather(*(
                (a if i % 2 else b).acquire(3, f"10.0.0.{i}:50051", 60_000) for i in range(12)))  # fmt: skip
            leases = [g for g in got if isinstance(g, Lease)]
            assert len(leases) == 1
            first = leases[0]
            assert {g for g in got if not isinstance(g, Lease)} == {first.owner}  # names it
            await a.append(first, 1, b"batch-1", 100)
            # The holder's last renewal gave it 300 ms and it pauses longer: it cannot write
            # even before anyone else takes the shard.
            assert await a.renew(first, 300)
            await asyncio.sleep(0.45)
            with pytest.raises(Fenced):
                await a.append(first, 2, b"batch-2", 100)
            second = await b.acquire(3, "10.0.0.99:50051", 5000)
            assert isinstance(second, Lease) and second.token > first.token
            assert await a.renew(first, 5000) is False  # the old holder learns it lost it
            with pytest.raises(Fenced):
                await a.write_snapshot(first, b"stale", 1, 0)
            assert await a.release(first) is False  # and cannot free the new holder's lease
            assert (await a.owners(4))[3] == "10.0.0.99:50051"
            await b.append(second, 2, b"batch-2-new-owner", 100)
            snapshot, journal = await b.load(3)
            assert snapshot is None and journal == [(1, b"batch-1"), (2, b"batch-2-new-owner")]
            await b.write_snapshot(second, b"state-through-2", 2, 0)  # trims what it covers
            assert await b.load(3) == (b"state-through-2", [])
            with pytest.raises(JournalFull):
                for seq in range(3, 10):
                    await b.append(second, seq, f"batch-{seq}".encode(), 4)
            assert await b.release(second) and (await b.owners(4))[3] is None
        finally:
            await a.close()
            await b.close()

    run(scenario())


def test_members_expire_and_leave(redis_cluster: LocalRedisCluster) -> None:
    redis_cluster.ensure_healthy()
    prefix = f"t-{uuid.uuid4().hex[:8]}"

    async def scenario() -> None:
        store = _store(redis_cluster, prefix)
        try:
            assert await store.heartbeat("a:1", 5000) == ["a:1"]
            assert await store.heartbeat("b:1", 200) == ["a:1", "b:1"]
            await asyncio.sleep(0.3)  # b stopped beating: gone, by Redis's clock
            assert await store.heartbeat("a:1", 5000) == ["a:1"]
            await store.leave("a:1")
            assert await store.heartbeat("c:1", 5000) == ["c:1"]
        finally:
            await store.close()

    run(scenario())


# --- snapshot and journal through Redis: the next owner's state is the old one's -------------

N_SYMBOLS = 40


def _config(model: ModelArtifacts, sections: dict[str, Any] | None = None) -> AppConfig:
    return AppConfig.model_validate({
        "features": {"n_symbols": N_SYMBOLS},
        "model": {"dir": str(model.root), "build_if_missing": False},
        "server": {"port": 0, "grace_s": 2.0},
        "spool": {"dir": tempfile.mkdtemp(prefix="spool-")},
        "telemetry": {"metrics_port": None},
        **(sections or {}),
    })  # fmt: skip


def _columns(t: TickColumns) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return t.symbol, t.price, t.size, t.ts_ns


def _record(seq: int, ticks: TickColumns, lo: int, hi: int) -> Any:
    batch = pb2.TickBatch(symbol=ticks.symbol[lo:hi].tolist(), price=ticks.price[lo:hi].tolist(),
                          size=ticks.size[lo:hi].tolist(), ts_ns=ticks.ts_ns[lo:hi].tolist())  # fmt: skip
    reply = pb2.SignalBatch(batch_id=seq, symbol=[int(ticks.symbol[hi - 1])],
                            ts_ns=[int(ticks.ts_ns[hi - 1])], direction=[3], strength=[0.25],
                            confidence=[0.5], model_version="m/1", computed_at_ns=seq)  # fmt: skip
    return pb2.SpoolRecord(seq=seq, producer="feed", batch_id=1000 + seq, fingerprint=b"f",
                           spooled_at_ns=time.time_ns(), ticks=batch, reply=reply)  # fmt: skip


def test_a_shard_moves_with_its_state_through_redis(
    model: ModelArtifacts, redis_cluster: LocalRedisCluster
) -> None:
    """Owner A snapshots a shard into Redis and journals batches after it; owner B loads the
    snapshot, replays the journal up to its first gap and ends with exactly the state of an
    engine that saw every journaled tick, its latest signals and A's replies for retries."""
    redis_cluster.ensure_healthy()
    table = ShardTable(N_SYMBOLS, 4)
    symbols = table.members(2)
    all_ticks, _ = synthetic_ticks(N_SYMBOLS, 80, seed=11)
    mine = np.isin(all_ticks.symbol, symbols)
    ticks = TickColumns(*(c[mine] for c in _columns(all_ticks)))
    n = len(ticks.symbol)
    cut = n // 2

    async def scenario() -> None:
        a, b = build_runtime(_config(model)), build_runtime(_config(model))
        reference = FeatureEngine.from_config(_config(model).features)
        store = _store(redis_cluster, f"t-{uuid.uuid4().hex[:8]}")
        try:
            lease = await store.acquire(2, "a:1", 5000)
            assert isinstance(lease, Lease)
            a.pipeline.replay(*(c[:cut] for c in _columns(ticks)))
            a.pipeline.adopt_signals([(Signal(int(symbols[0]), 5, 1, -0.5, 0.75, "m/1", "fp32",
                                              "ab" * 32, "local"), 7)])  # fmt: skip
            state, signals = a.ingestor.shard_state(symbols)
            snapshot = ShardSnapshot(2, 4, 10, 10, time.time_ns(), "a:1", lease.token, state,
                                     signals)  # fmt: skip
            assert ShardSnapshot.decode(snapshot.encode()) == snapshot
            await store.write_snapshot(lease, snapshot.encode(), 10, 100)
            step = (n - cut) // 3
            bounds = [(cut, cut + step), (cut + step, cut + 2 * step), (cut + 2 * step, n)]
            for seq, (lo, hi) in zip((11, 12, 14), bounds, strict=True):  # 13 never journaled
                await store.append(lease, seq, _record(seq, ticks, lo, hi).SerializeToString(),
                                   100)  # fmt: skip
            data, records = await store.load(2)
            assert data is not None
            last = b.ingestor.adopt_shard(symbols, ShardSnapshot.decode(data), records)
            assert last == 12  # the gap at 13: batch 14 was never acknowledged
            reference.update(*(c[: cut + 2 * step] for c in _columns(ticks)))
            st, ref = b.pipeline.engine.state, reference.state
            assert np.array_equal(st.floats[:, symbols], ref.floats[:, symbols])
            assert np.array_equal(st.ints[:, symbols], ref.ints[:, symbols])
            assert np.array_equal(st.rings[:, symbols], ref.rings[:, symbols])
            others = np.setdiff1d(np.arange(N_SYMBOLS), symbols)
            assert (st.ints[0, others] == 0).all()  # only the shard's symbols were touched
            found = b.pipeline.latest(int(symbols[0]))
            assert found is not None and found[0].strength == -0.5 and found[1] == 7
            last_symbol = int(ticks.symbol[cut + 2 * step - 1])
            found = b.pipeline.latest(last_symbol)  # from the journal's replies
            assert found is not None and found[1] == 12 and found[0].strength == 0.25
            assert b.ingestor.recent.get(("feed", 1012)) is not None  # a retry gets its reply
        finally:
            await store.close()
            for runtime in (a, b):
                await runtime.backend.close()

    run(scenario())


# --- refusals name the owner; the client follows them -----------------------------------------


def _sharding(cluster: LocalRedisCluster, prefix: str, **overrides: Any) -> dict[str, Any]:
    return {
        "cache": {"redis": {"nodes": cluster.startup_nodes, "auth": "password",
                            "password": PASSWORD}},
        "sharding": {"enabled": True, "shards": 4, "key_prefix": prefix, "lease_ttl_s": 1.5,
                     "renew_interval_s": 0.2, "snapshot_interval_s": 0.3,
                     "handover_timeout_s": 5.0, **overrides},
    }  # fmt: skip


async def _until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        await asyncio.sleep(0.05)


def _server(model: ModelArtifacts, sections: dict[str, Any]) -> SignalServer:
    config = _config(model, sections)
    return SignalServer(config, build_runtime(config))


async def _two_owners(model: ModelArtifacts, sections: dict[str, Any]) -> tuple[SignalServer, ...]:
    """Two in-process replicas of 4 shards, started one after the other, holding two each."""
    a, b = _server(model, sections), _server(model, sections)
    await a.start()
    await b.start()
    await _until(lambda: len(_owned(a)) == len(_owned(b)) == 2, 10, "two shards each")
    return a, b


def _owned(server: SignalServer) -> list[int]:
    assert server.runtime.shards is not None
    return sorted(s for s, slot in server.runtime.shards.slots.items() if slot.status == "owned")


def test_a_replica_refuses_what_it_does_not_own_naming_the_owner(
    model: ModelArtifacts, redis_cluster: LocalRedisCluster
) -> None:
    redis_cluster.ensure_healthy()
    sections = _sharding(redis_cluster, f"t-{uuid.uuid4().hex[:8]}", forward=False)
    table = ShardTable(N_SYMBOLS, 4)
    ticks, _ = synthetic_ticks(N_SYMBOLS, 40, seed=5)

    async def scenario() -> None:
        a, b = _server(model, sections), _server(model, sections)
        await a.start()
        assert _owned(a) == [0, 1, 2, 3]  # alone: it takes every shard before it is ready
        await b.start()
        await _until(lambda: len(_owned(a)) == len(_owned(b)) == 2, 10, "two shards each")
        assert set(_owned(a)).isdisjoint(_owned(b))
        try:
            shard = _owned(a)[0]
            symbol = int(table.members(shard)[0])
            at = np.flatnonzero(ticks.symbol == symbol)[:5]
            batch = pb2.TickBatch(symbol=ticks.symbol[at].tolist(), price=ticks.price[at].tolist(),
                                  size=ticks.size[at].tolist(), ts_ns=ticks.ts_ns[at].tolist())  # fmt: skip
            async with grpc.aio.insecure_channel(b.advertise) as channel:
                stub = pb2_grpc.SignalServiceStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.IngestTicks(batch)
                assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                facts = dict(err.value.trailing_metadata() or ())
                assert facts == {"shard-owner": a.advertise, "shard": str(shard),
                                 "shard-count": "4"}  # fmt: skip
                assert f"shard {shard} is owned by {a.advertise}" in (err.value.details() or "")
                assert b.runtime.pipeline.engine.state.tick_count(symbol) == 0  # not computed
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.GetSignal(pb2.SignalRequest(symbol=symbol))
                assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert dict(err.value.trailing_metadata() or ())["shard-owner"] == a.advertise
                other = int(table.members(_owned(b)[0])[0])  # two shards in one batch
                mixed = pb2.TickBatch(symbol=[symbol, other], price=[1.0, 1.0], size=[1.0, 1.0],
                                      ts_ns=[int(ticks.ts_ns[0])] * 2)  # fmt: skip
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.IngestTicks(mixed)
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "symbol[1] = " in (err.value.details() or "")
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.IngestTicks(batch, metadata=(("shard-count", "16"),))
                assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert dict(err.value.trailing_metadata() or ())["shard-count"] == "4"
            # The client, knowing only B, splits by shard and follows the refusals to A.
            async with SignalClient([b.advertise]) as client:
                reply = await client.ingest(ticks.symbol[:200], ticks.price[:200],
                                            ticks.size[:200], ticks.ts_ns[:200])  # fmt: skip
                assert reply.accepted == 200 and client.shards == 4
                assert set(client.owners.values()) == {a.advertise}  # learned from refusals
                assert a.advertise in client.targets
            for server in (a, b):
                runtime = server.runtime
                st, shards = runtime.pipeline.engine.state, runtime.shards
                assert shards is not None
                mine = np.isin(table.of(ticks.symbol[:200]), _owned(server))
                counted = sum(st.tick_count(int(s)) for s in np.unique(ticks.symbol[:200]))
                assert counted == int(mine.sum())  # each replica computed exactly its own
        finally:
            await b.stop(grace_s=1.0)
            await _until(lambda: len(_owned(a)) == 4, 10, "A takes B's shards after B leaves")
            await a.stop(grace_s=1.0)

    run(scenario())


# --- acceptance: three processes as shards, one killed, one added, one engine's signals -------


@pytest.mark.slow
def test_three_shard_processes_one_killed_one_added_give_one_engines_signals(
    model: ModelArtifacts, redis_cluster: LocalRedisCluster, tmp_path: Path
) -> None:
    """A seeded multi-symbol stream replayed through `SignalClient` to three service processes
    sharing 8 shards; one is SIGKILLed and a fourth started mid-stream. Every batch's ack and
    every signal (direction, strength, confidence, tick time) equals what one unsharded
    engine answers for the same stream."""
    redis_cluster.ensure_healthy()
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    sections = _sharding(redis_cluster, prefix, shards=8, renew_interval_s=0.25,
                         snapshot_interval_s=0.5, snapshot_every_batches=25,
                         journal_keep_batches=25)  # fmt: skip
    config = {"features": {"n_symbols": N_SYMBOLS}, "telemetry": {"metrics_port": None},
              **sections}  # fmt: skip
    ticks, _ = synthetic_ticks(N_SYMBOLS, 150, seed=21)
    per_batch, n_batches = 20, 300
    kill_at, add_at, settle_at = 80, 150, 230
    procs = [ServiceProcess(tmp_path, config, model) for _ in range(4)]

    def batch(b: int) -> tuple[np.ndarray, ...]:
        return tuple(c[b * per_batch : (b + 1) * per_batch] for c in _columns(ticks))

    async def stream(targets: list[str], events: bool) -> tuple[list[Any], int]:
        replies = []
        adding: asyncio.Task[Any] | None = None
        store = _store(redis_cluster, prefix)
        async with SignalClient(targets, retry_for_s=60) as client:
            for b in range(n_batches):
                if events and b == kill_at:
                    procs[0].kill()
                if events and b == add_at:
                    adding = asyncio.create_task(asyncio.to_thread(procs[3].start))
                if events and b == settle_at:
                    assert adding is not None
                    await adding
                    await _until_async(lambda: _owns(store, procs[3].target), 30,
                                       "the added replica takes shards")  # fmt: skip
                replies.append(await client.ingest(*batch(b)))
            retries = client.retries
        owners = await store.owners(8)
        await store.close()
        if events:
            assert procs[0].target not in owners and procs[3].target in owners
            assert None not in owners
        return replies, retries

    async def scenario() -> None:
        reference = SignalServer(_config(model), build_runtime(_config(model)))
        port = await reference.start()
        try:
            expected, _ = await stream([f"127.0.0.1:{port}"], events=False)
        finally:
            await reference.stop(grace_s=1.0)
        got, retries = await stream([p.target for p in procs[:3]], events=True)
        assert retries > 0  # parts did follow refusals and outlive the killed replica
        signals = 0
        for b, (want, have) in enumerate(zip(expected, got, strict=True)):
            assert have.accepted == want.accepted == per_batch, b
            w, h = want.signal_columns(), have.signal_columns()
            order_w, order_h = np.argsort(w["symbol"]), np.argsort(h["symbol"])
            for name in w:
                assert np.array_equal(w[name][order_w], h[name][order_h]), (b, name)
            signals += len(w["symbol"])
        assert signals > 2000  # warm for most of the stream

    try:
        for p in procs[:3]:
            p.start()
        run(scenario())
    finally:
        codes = [p.stop(30) for p in procs[1:]]
        for p in procs:
            p.close()
    logs = "\n".join(p.output() for p in procs)
    assert codes == [0, 0, 0], logs[-3000:]
    assert "Traceback" not in logs
    assert "taken over" in logs and "handed over" in logs


async def _owns(store: LeaseStore, address: str) -> bool:
    return address in await store.owners(8)


async def _until_async(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        await asyncio.sleep(0.1)


def test_an_owner_that_stops_renewing_stops_computing(
    model: ModelArtifacts, redis_cluster: LocalRedisCluster
) -> None:
    """A replica whose renewals stop (a paused process) loses its shards to another after
    the TTL; woken up, it refuses their batches by its own clock instead of computing them."""
    redis_cluster.ensure_healthy()
    sections = _sharding(redis_cluster, f"t-{uuid.uuid4().hex[:8]}")
    ticks, _ = synthetic_ticks(N_SYMBOLS, 10, seed=9)
    table = ShardTable(N_SYMBOLS, 4)

    async def scenario() -> None:
        a, b = _server(model, sections), _server(model, sections)
        await a.start()
        assert a.runtime.shards is not None and a.runtime.shards._task is not None
        a.runtime.shards._task.cancel()  # no more renewals from here on
        await b.start()
        try:
            await _until(lambda: _owned(b) == [0, 1, 2, 3], 10, "B takes the expired shards")
            symbol = int(table.members(1)[0])
            at = np.flatnonzero(ticks.symbol == symbol)[:3]
            batch = pb2.TickBatch(symbol=ticks.symbol[at].tolist(), price=ticks.price[at].tolist(),
                                  size=ticks.size[at].tolist(), ts_ns=ticks.ts_ns[at].tolist())  # fmt: skip
            async with grpc.aio.insecure_channel(a.advertise) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await pb2_grpc.SignalServiceStub(channel).IngestTicks(batch)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert a.runtime.pipeline.engine.state.tick_count(symbol) == 0
            assert 1 not in a.runtime.shards.slots  # dropped on the spot
        finally:
            await a.stop(grace_s=1.0)
            await b.stop(grace_s=1.0)

    run(scenario())


def test_a_replica_forwards_what_it_does_not_own_to_the_owner(
    model: ModelArtifacts, redis_cluster: LocalRedisCluster
) -> None:
    """With forwarding (the default), a batch or read of another replica's shard is sent on
    once to its owner, computed there only, and the answer names the owner; a call that was
    already forwarded is refused instead of being sent on again."""
    redis_cluster.ensure_healthy()
    sections = _sharding(redis_cluster, f"t-{uuid.uuid4().hex[:8]}")
    table = ShardTable(N_SYMBOLS, 4)
    ticks, _ = synthetic_ticks(N_SYMBOLS, 40, seed=5)

    async def scenario() -> None:
        a, b = await _two_owners(model, sections)
        try:
            symbol = int(table.members(_owned(a)[0])[0])
            at = np.flatnonzero(ticks.symbol == symbol)
            batch = pb2.TickBatch(symbol=ticks.symbol[at].tolist(), price=ticks.price[at].tolist(),
                                  size=ticks.size[at].tolist(), ts_ns=ticks.ts_ns[at].tolist(),
                                  producer="feed", batch_id=1)  # fmt: skip
            async with grpc.aio.insecure_channel(b.advertise) as channel:
                stub = pb2_grpc.SignalServiceStub(channel)
                call = stub.IngestTicks(batch)
                ack = await call
                assert ack.accepted == len(at) and ack.signals == 1  # warm after 40 ticks
                assert dict(await call.trailing_metadata() or ())["shard-owner"] == a.advertise
                assert a.runtime.pipeline.engine.state.tick_count(symbol) == len(at)
                assert b.runtime.pipeline.engine.state.tick_count(symbol) == 0
                assert (await stub.IngestTicks(batch)).accepted == len(at)  # a retry: deduped
                assert a.runtime.pipeline.engine.state.tick_count(symbol) == len(at)
                signal = await stub.GetSignal(pb2.SignalRequest(symbol=symbol))
                assert signal.symbol == symbol and signal.ts_ns == int(ticks.ts_ns[at[-1]])
                with pytest.raises(grpc.aio.AioRpcError) as err:  # one hop, never two
                    await stub.GetSignal(pb2.SignalRequest(symbol=symbol),
                                         metadata=(("x-signal-forwarded", "1"),))  # fmt: skip
                assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            async with SignalClient([b.advertise]) as client:
                assert (await client.get_signal(symbol)).ts_ns == int(ticks.ts_ns[at[-1]])
                assert client.owners == {table.of(np.array([symbol]))[0]: a.advertise}
        finally:
            await b.stop(grace_s=1.0)
            await a.stop(grace_s=1.0)

    run(scenario())


def test_a_stopping_replica_hands_its_shards_over_at_once(
    model: ModelArtifacts, redis_cluster: LocalRedisCluster
) -> None:
    """SIGTERM's path (`stop`): every shard is snapshot through its last applied batch and
    its lease released, so the other replica owns it well before the lease would expire."""
    redis_cluster.ensure_healthy()
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    sections = _sharding(redis_cluster, prefix, lease_ttl_s=30.0, renew_interval_s=0.2,
                         snapshot_interval_s=600.0)  # fmt: skip
    ticks, _ = synthetic_ticks(N_SYMBOLS, 30, seed=13)

    async def scenario() -> None:
        a, b = await _two_owners(model, sections)
        store = _store(redis_cluster, prefix)
        try:
            async with SignalClient([b.advertise]) as client:
                for lo in range(0, len(ticks.symbol), 100):
                    await client.ingest(*(c[lo : lo + 100] for c in _columns(ticks)))
            assert b.runtime.shards is not None
            applied = {s: b.runtime.shards.slots[s].applied_seq for s in _owned(b)}
            assert all(seq > 0 for seq in applied.values())
            started = time.monotonic()
            await b.stop(grace_s=1.0)
            for shard, seq in applied.items():
                data, _ = await store.load(shard)
                assert data is not None and ShardSnapshot.decode(data).state_seq == seq
            await _until(lambda: len(_owned(a)) == 4, 5, "A owns every shard")
            assert time.monotonic() - started < 10  # the 30 s leases were released, not expired
        finally:
            await store.close()
            await a.stop(grace_s=1.0)

    run(scenario())
