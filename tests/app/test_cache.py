"""The cache hierarchy: L1 semantics, the binary values, and L2 on a real Redis Cluster."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from google.oauth2.credentials import Credentials as TokenCredentials
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from redis.asyncio.cluster import RedisCluster

from app.cache import (
    IamTokenCredentialProvider,
    L1Cache,
    RedisL2,
    TieredCache,
    decode_signal,
    decode_value,
    encode_signal,
    encode_signals,
    redis_client_kwargs,
    signal_key,
)
from app.gcp_auth import AccessTokens
from app.settings.cache import CacheConfig, RedisConfig
from app.settings.warehouse import WarehouseConfig
from app.signals import DIRECTION_DOWN, DIRECTION_FLAT, DIRECTION_UP, Signal, SignalColumns
from app.telemetry import Metrics
from app.warehouse import DuckDBSink, Warehouse
from tests.app.conftest import run
from tests.app.redis_cluster import PASSWORD, LocalRedisCluster


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def record(
    symbol: int, ts: int = 1_700_000_000_000_000_000, direction: int = DIRECTION_UP
) -> Signal:
    return Signal(symbol, ts, direction, 0.25, 0.75, "signal_mlp/1")


def token_provider(token: str = PASSWORD) -> IamTokenCredentialProvider:
    """The IAM provider with a token that needs no refresh (Redis's password here)."""
    return IamTokenCredentialProvider(AccessTokens(TokenCredentials(token)))


def counts(metrics: Metrics) -> dict[tuple[str, str], float]:
    out = {}
    for level in ("l1", "l2", "l3"):
        for result in ("hit", "miss"):
            out[(level, result)] = metrics.cache_requests.labels(level, result)._value.get()
    return out


# --- L1 ---------------------------------------------------------------------------------


def test_l1_evicts_the_least_recently_used_entry_when_full() -> None:
    l1: L1Cache[str, int] = L1Cache(max_entries=3, ttl_s=60)
    for k in "abc":
        l1.put(k, ord(k))
    assert l1.get("a") == ord("a")  # a is now the most recently used
    l1.put("d", 4)
    assert len(l1) == 3
    assert l1.get("b") is None  # b was the least recently used
    assert [l1.get(k) for k in "acd"] == [ord("a"), ord("c"), 4]


def test_l1_entries_expire_after_their_ttl() -> None:
    clock = FakeClock()
    l1: L1Cache[str, str] = L1Cache(max_entries=10, ttl_s=2.0, clock=clock)
    l1.put("AAPL", "x")
    clock.t += 1.999
    assert l1.get("AAPL") == "x"
    clock.t += 0.002
    assert l1.get("AAPL") is None
    assert len(l1) == 0  # the expired entry was dropped, not kept around
    l1.put("AAPL", "y")  # a rewrite gets a fresh TTL
    clock.t += 1.5
    assert l1.get("AAPL") == "y"


def test_l1_stays_bounded_under_many_distinct_keys() -> None:
    l1: L1Cache[str, int] = L1Cache(max_entries=1000, ttl_s=60)
    for i in range(50_000):
        l1.put(str(i), i)
    assert len(l1) == 1000
    assert l1.get("49999") == 49999 and l1.get("0") is None


# --- values and keys --------------------------------------------------------------------


def test_signal_values_are_compact_binary_and_round_trip() -> None:
    rec = Signal(4711, 1_700_000_000_123_456_789, DIRECTION_DOWN, -0.625, 0.8125, "signal_mlp/3")
    computed_at = 1_700_000_000_200_000_000
    value = encode_signal(rec, computed_at)
    assert decode_signal(value) == rec and decode_value(value) == (rec, computed_at)
    as_json = json.dumps({**asdict(rec), "computed_at_ns": computed_at}).encode()
    assert len(value) < 0.5 * len(as_json), (len(value), len(as_json))
    with pytest.raises(UnicodeDecodeError):
        value.decode()  # not text: binary through and through
    wrong_direction = value[:13] + b"\x07" + value[14:]
    for corrupt in (value[:-1], b"\x01" + value[1:], b"", wrong_direction):
        with pytest.raises(ValueError):
            decode_signal(corrupt)


def test_values_of_many_signals_are_encoded_from_the_columns_alike() -> None:
    signals = SignalColumns(np.array([3, 70000], np.int32), np.array([5, -6], np.int64),
                            np.array([DIRECTION_DOWN, DIRECTION_UP], np.int8),
                            np.array([0.5, -0.25], np.float32), np.array([0.75, 0.9], np.float32),
                            "signal_mlp/2", "int4", "cd" * 32, "kserve")  # fmt: skip
    assert encode_signals(signals, 99) == [encode_signal(signals.row(i), 99) for i in range(2)]
    with pytest.raises(ValueError, match="at most 255 bytes"):
        encode_signals(SignalColumns.empty("x" * 256), 1)


def test_keys_are_hash_tagged_by_symbol() -> None:
    assert signal_key(17) == "{17}:signal"


# --- configuration ----------------------------------------------------------------------


def test_redis_config_errors_name_the_field_the_value_and_what_is_allowed() -> None:
    with pytest.raises(ValidationError) as err:
        RedisConfig(nodes=["10.0.0.1:6379", "redis-2:99999"])
    assert "nodes[1] = 'redis-2:99999'" in str(err.value)
    assert "host:port with port 1-65535" in str(err.value)
    with pytest.raises(ValidationError) as err:
        RedisConfig(nodes=["r:6379"], auth="password")
    assert "password must be set" in str(err.value)
    with pytest.raises(ValidationError) as err:
        CacheConfig(l1_max_entries=0)
    text = str(err.value)
    assert (
        "l1_max_entries" in text
        and "input_value=0" in text
        and "greater than or equal to 1" in text
    )
    with pytest.raises(ValidationError) as err:
        RedisConfig(nodes=["r:6379"], ttl_seconds=3)  # type: ignore[call-arg]
    assert "ttl_seconds" in str(err.value) and "Extra inputs are not permitted" in str(err.value)


def test_tls_and_iam_settings_reach_the_client(tmp_path: Path) -> None:
    ca = tmp_path / "server-ca.pem"
    provider = token_provider()
    cfg = RedisConfig(
        nodes=["10.1.2.3:6379", "10.1.2.4:6380"], tls=True, ca_file=ca, auth="iam",
        timeout_s=0.3, connect_timeout_s=0.4,
    )  # fmt: skip
    kwargs = redis_client_kwargs(cfg, provider)
    assert kwargs["ssl"] is True and kwargs["ssl_ca_certs"] == str(ca)
    assert kwargs["ssl_cert_reqs"] == "required"
    assert kwargs["credential_provider"] is provider
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (0.3, 0.4)
    assert [(n.host, n.port) for n in kwargs["startup_nodes"]] == [
        ("10.1.2.3", 6379),
        ("10.1.2.4", 6380),
    ]
    plain = redis_client_kwargs(RedisConfig(nodes=["r:1"]))
    assert "ssl" not in plain and "credential_provider" not in plain and "password" not in plain
    client = RedisCluster(**kwargs)  # the real client accepts them all
    assert client.get_connection_kwargs()["credential_provider"] is provider
    with pytest.raises(ValidationError, match="needs tls = true"):
        RedisConfig(nodes=["r:1"], ca_file=ca)


def test_iam_auth_sends_the_current_access_token_and_refreshes_it_when_due() -> None:
    """Every new connection authenticates with the workload's current token; an expiring
    one is refreshed first (off the event loop for the async client)."""
    import datetime

    from google.auth.credentials import Credentials

    issued: list[str] = []

    def utc_now() -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)  # google-auth's naive UTC

    class Expiring(Credentials):  # the true edge: Google's token endpoint
        def refresh(self, request: object) -> None:
            issued.append(f"token-{len(issued)}")
            self.token, self.expiry = issued[-1], utc_now() + datetime.timedelta(hours=1)

    credentials = Expiring()
    provider = IamTokenCredentialProvider(AccessTokens(credentials))
    assert provider.get_credentials() == ("token-0",)
    assert run(provider.get_credentials_async()) == ("token-0",)  # still valid: reused
    credentials.expiry = utc_now() + datetime.timedelta(minutes=3)  # inside the refresh margin
    assert run(provider.get_credentials_async()) == ("token-1",)
    assert provider.get_credentials() == ("token-1",)
    assert provider.tokens.refreshes == 2


# --- L2 on the real Redis Cluster -------------------------------------------------------


@pytest.fixture
def cluster(redis_cluster: LocalRedisCluster) -> LocalRedisCluster:
    redis_cluster.ensure_healthy()
    redis_cluster.flush()
    return redis_cluster


def cache_config(cluster: LocalRedisCluster, **redis: object) -> CacheConfig:
    settings: dict[str, object] = {"nodes": cluster.startup_nodes, "auth": "iam", "cooldown_s": 0.2}
    settings.update(redis)
    return CacheConfig(l1_ttl_s=60, redis=RedisConfig.model_validate(settings))


def test_symbols_spread_over_every_master_and_values_are_binary(cluster: LocalRedisCluster) -> None:
    symbols = list(range(200))

    async def scenario() -> None:
        cache = TieredCache.from_config(
            cache_config(cluster), metrics=Metrics(CollectorRegistry()),
            credential_provider=token_provider(),
        )  # fmt: skip
        await cache.put_many([record(s) for s in symbols])
        await cache.close()

    run(scenario())
    masters = cluster.masters()
    per_master = [int(m.cli("DBSIZE")) for m in masters]
    assert len(masters) == 3 and all(n > 20 for n in per_master), per_master
    assert sum(per_master) == len(symbols)
    owner = cluster.master_of("{7}:signal")
    assert owner.cli("EXISTS", "{7}:signal") == "1"
    assert int(owner.cli("STRLEN", "{7}:signal")) == len(encode_signal(record(7)))
    assert 0 < int(owner.cli("PTTL", "{7}:signal")) <= 300_000  # written with the TTL


def test_reads_go_l1_l2_l3_and_fill_upward(cluster: LocalRedisCluster, tmp_path: Path) -> None:
    async def scenario() -> None:
        metrics = Metrics(CollectorRegistry())
        warehouse = Warehouse(
            WarehouseConfig(batch_rows=10), DuckDBSink(tmp_path / "w.duckdb"), metrics
        )
        now = time.time_ns() // 1000 * 1000  # the warehouse keeps microseconds
        history = [record(1, now - 2_000_000), record(1, now - 1_000_000, DIRECTION_DOWN)]
        warehouse.append_signals([*history, record(2, now)])
        await warehouse.flush(10)
        cache = TieredCache.from_config(
            cache_config(cluster), l3=warehouse, metrics=metrics,
            credential_provider=token_provider(),
        )  # fmt: skip
        assert cache.l2 is not None

        first = await cache.get(1)  # L1 miss, L2 miss, L3 hit: the latest row
        assert first == history[1]
        assert counts(metrics) == {("l1", "hit"): 0, ("l1", "miss"): 1, ("l2", "hit"): 0,
                                   ("l2", "miss"): 1, ("l3", "hit"): 1, ("l3", "miss"): 0}  # fmt: skip
        raw = await cache.l2.client.get("{1}:signal")  # filled into L2 ...
        assert raw is not None and decode_signal(raw) == history[1]
        assert cache.l1.get(1) == (history[1], history[1].ts_ns)  # ... and into L1

        assert await cache.get(1) == history[1]  # now an L1 hit
        assert counts(metrics)[("l1", "hit")] == 1
        cache.l1.clear()
        assert await cache.get(1) == history[1]  # an L2 hit, refilling L1
        assert counts(metrics)[("l2", "hit")] == 1 and cache.l1.get(1) == (
            history[1],
            history[1].ts_ns,
        )

        got = await cache.get_many([1, 2, 999])
        assert set(got) == {1, 2}
        c = counts(metrics)
        assert c[("l3", "miss")] == 1 and c[("l3", "hit")] == 2  # NOPE missed everywhere

        newer = record(1, now, DIRECTION_FLAT)
        await cache.put(newer)  # write-through: L1, L2 and the warehouse batch
        assert cache.l1.get(1)[0] == newer  # type: ignore[index]
        assert decode_signal(await cache.l2.client.get("{1}:signal")) == newer
        await warehouse.flush(10)
        assert (await warehouse.latest_signals([1]))[1] == newer
        await cache.close()
        await warehouse.close()

    run(scenario())


def test_a_wrong_token_fails_soft_to_misses(cluster: LocalRedisCluster) -> None:
    async def scenario() -> None:
        metrics = Metrics(CollectorRegistry())
        bad = token_provider("expired-token")
        cache = TieredCache.from_config(
            cache_config(cluster), metrics=metrics, credential_provider=bad
        )
        await cache.put(record(1))  # no exception: L2 refused, L1 still written
        assert await cache.get(1) == record(1)
        cache.l1.clear()
        assert await cache.get(1) is None
        assert metrics.cache_errors.labels("l2")._value.get() >= 1
        assert metrics.cache_available.labels("l2")._value.get() == 0
        await cache.close()

    run(scenario())


def test_a_killed_master_fails_over_and_the_cache_keeps_answering(
    cluster: LocalRedisCluster,
) -> None:
    symbols = list(range(1000, 1150))
    records = {s: record(s) for s in symbols}

    async def scenario() -> None:
        metrics = Metrics(CollectorRegistry())
        cache = TieredCache.from_config(
            cache_config(cluster), metrics=metrics, credential_provider=token_provider()
        )
        assert cache.l2 is not None
        await cache.put_many(list(records.values()))
        await asyncio.sleep(0.2)  # let the replicas take the writes
        victim = cluster.master_of(signal_key(symbols[0]))
        victim.kill()
        killed_at = time.monotonic()
        answered = full = 0
        while time.monotonic() - killed_at < 15:
            cache.l1.clear()  # force every read down to L2
            got = await cache.get_many(symbols)  # must never raise
            answered += 1
            assert all(got[s] == records[s] for s in got)  # misses allowed, wrong answers not
            if len(got) == len(symbols):
                full += 1
                if full >= 3:
                    break
            await asyncio.sleep(0.05)
        # The promoted replica serves the dead master's slots, with its data.
        assert full >= 3, f"L2 never answered fully again after the failover ({answered} reads)"
        assert cluster.master_of(signal_key(symbols[0])).port != victim.port
        assert metrics.cache_errors.labels("l2")._value.get() >= 1  # the outage was seen
        await cache.close()

    try:
        run(scenario())
    finally:
        cluster.ensure_healthy()


def test_whole_cluster_down_degrades_to_l1_and_recovers(cluster: LocalRedisCluster) -> None:
    async def scenario() -> None:
        metrics = Metrics(CollectorRegistry())
        cache = TieredCache.from_config(
            cache_config(cluster), metrics=metrics, credential_provider=token_provider()
        )
        assert cache.l2 is not None
        await cache.put(record(1))
        cluster.stop_all()
        slowest = 0.0
        for i in range(20):
            t0 = time.perf_counter()
            await cache.put(record(100 + i))  # writes keep working (L1)
            assert await cache.get(100 + i) == record(100 + i)
            assert await cache.get(1) == record(1)
            assert await cache.get(500 + i) is None  # a miss, not an error
            slowest = max(slowest, time.perf_counter() - t0)
            await asyncio.sleep(0.02)
        assert metrics.cache_available.labels("l2")._value.get() == 0
        # Degraded: L2 is retried once per cooldown, not on each of the 80 calls, and no
        # call waits out timeouts.
        assert 1 <= cache.l2.failures < 20, cache.l2.failures
        assert slowest < 1.0, slowest

        cluster.start_all()
        cluster.wait_healthy()
        deadline = time.monotonic() + 20
        while True:  # writes reach Redis again once it answers
            await cache.put(record(77))
            cache.l1.clear()
            if await cache.get(77) == record(77):
                break
            assert time.monotonic() < deadline, "L2 did not come back after the cluster did"
            await asyncio.sleep(0.2)
        assert metrics.cache_requests.labels("l2", "hit")._value.get() >= 1
        assert metrics.cache_available.labels("l2")._value.get() == 1
        await cache.close()

    try:
        run(scenario())
    finally:
        cluster.ensure_healthy()


def test_an_unreachable_cluster_at_startup_is_no_error() -> None:
    async def scenario() -> None:
        metrics = Metrics(CollectorRegistry())
        l2 = RedisL2(RedisConfig(nodes=["127.0.0.1:1"], cooldown_s=5), metrics)
        cache = TieredCache(CacheConfig(), l2=l2, metrics=metrics)
        await cache.put(record(1))
        assert await cache.get(1) == record(1)
        assert await cache.get(2) is None
        assert l2.failures == 1  # tried once, then skipped for the cooldown
        await cache.close()

    run(scenario())


def test_after_the_cooldown_one_call_probes_l2_and_a_failed_probe_skips_it_again() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        metrics = Metrics(CollectorRegistry())
        l2 = RedisL2(RedisConfig(nodes=["127.0.0.1:1"], cooldown_s=5), metrics, clock=clock)
        assert await l2.get_many([1]) is None and l2.failures == 1
        assert l2.breaker.state == "open" and metrics.cache_available.labels("l2")._value.get() == 0
        clock.t += 4.9
        assert not await l2.set_many({1: (b"v", 1000)}) and l2.failures == 1  # skipped
        clock.t += 0.1
        assert await l2.get_many([1, 2]) is None and l2.failures == 2  # the probe, failed
        assert l2.breaker.state == "open" and await l2.get_many([3]) is None
        assert l2.failures == 2 and metrics.cache_errors.labels("l2")._value.get() == 2
        await l2.close()

    run(scenario())


def test_submitted_signals_go_to_l2_only_the_newest_of_each_symbol(
    cluster: LocalRedisCluster,
) -> None:
    """The data path's own signals: L2 (for the other replicas) gets each symbol's newest;
    L1 stays for what other replicas computed (the in-process store answers these)."""
    t = 1_700_000_000_000_000_000

    def columns(symbols: list[int], ts: int, direction: int) -> SignalColumns:
        n = len(symbols)
        return SignalColumns(np.array(symbols, np.int32), np.full(n, ts, np.int64),
                             np.full(n, direction, np.int8), np.full(n, 0.5, np.float32),
                             np.full(n, 0.75, np.float32), "signal_mlp/1", "int8", "ab" * 32,
                             "local")  # fmt: skip

    newer, older = columns([1, 2], t + 10, DIRECTION_UP), columns([2, 3], t, DIRECTION_DOWN)
    computed_at = time.time_ns()

    async def scenario() -> dict[int, bytes] | None:
        cache = TieredCache.from_config(cache_config(cluster), metrics=Metrics(CollectorRegistry()),
                                        credential_provider=token_provider())  # fmt: skip
        cache.submit(newer, computed_at)
        cache.submit(older, computed_at)  # symbol 2's older tick must not win
        assert len(cache.l1) == 0
        await cache.close()  # drains the background writer
        reader = RedisL2(cache_config(cluster).redis, Metrics(CollectorRegistry()),  # type: ignore[arg-type]
                         token_provider())  # fmt: skip
        values = await reader.get_many([1, 2, 3])
        await reader.close()
        return values

    values = run(scenario())
    assert values is not None
    assert {s: decode_value(v) for s, v in values.items()} == {
        1: (newer.row(0), computed_at), 2: (newer.row(1), computed_at),
        3: (older.row(1), computed_at),
    }  # fmt: skip


def test_redis_keeps_the_newest_tick_whatever_order_the_writes_come_in(
    cluster: LocalRedisCluster,
) -> None:
    """A late write (a slow batch, another replica) never rolls a symbol back."""

    async def scenario() -> None:
        cache = TieredCache.from_config(cache_config(cluster), metrics=Metrics(CollectorRegistry()),
                                        credential_provider=token_provider())  # fmt: skip
        assert cache.l2 is not None
        t = 1_700_000_000_000_000_000
        newest = record(9, t + 400, DIRECTION_DOWN)  # 400 ns later than the next one
        await cache.put(newest)
        for older in (record(9, t), record(9, t + 399), record(9, t + 400, DIRECTION_UP)):
            await cache.put(older)  # older or the same tick: refused by the server
        assert decode_signal(await cache.l2.client.get("{9}:signal")) == newest
        # Pipelined writes of many symbols, half of them stale, keep the newest per symbol.
        await cache.put_many([record(s, t + 1_000) for s in range(100, 140)])
        await cache.put_many([record(s, t + (2_000 if s % 2 else 500)) for s in range(100, 140)])
        for s in range(100, 140):
            got = decode_signal(await cache.l2.client.get(signal_key(s)))
            assert got.ts_ns == (t + 2_000 if s % 2 else t + 1_000), s
        await cache.close()

    run(scenario())


def test_no_level_answers_a_signal_older_than_the_maximum_age(
    cluster: LocalRedisCluster, tmp_path: Path
) -> None:
    """L1, L2 and L3 each refuse a signal computed more than max_signal_age_s ago."""

    async def scenario() -> None:
        metrics = Metrics(CollectorRegistry())
        warehouse = Warehouse(WarehouseConfig(batch_rows=10), DuckDBSink(tmp_path / "w.duckdb"),
                              metrics)  # fmt: skip
        now = [time.time_ns()]
        config = CacheConfig(l1_ttl_s=60, max_signal_age_s=30, redis=cache_config(cluster).redis)
        cache = TieredCache(config, l2=RedisL2(config.redis, metrics, token_provider()),  # type: ignore[arg-type]
                            l3=warehouse, metrics=metrics, wall_clock_ns=lambda: now[0],
                            clock=lambda: now[0] / 1e9)  # fmt: skip
        tick = now[0] - 10**9
        warehouse.append_signals([record(1, tick)], computed_at_ns=now[0] - 40 * 10**9)  # old
        warehouse.append_signals([record(2, tick)], computed_at_ns=now[0] - 20 * 10**9)
        await warehouse.flush(10)
        assert await cache.get(1) is None  # L3 has it, computed 40 s ago: too old
        assert await cache.get(2) == record(2, tick)  # 20 s: served, and filled upward
        assert 0 < int(cluster.master_of(signal_key(2)).cli("PTTL", signal_key(2))) <= 10_000
        now[0] += 11 * 10**9  # now 31 s old
        assert await cache.get(2) is None  # not from L1 ...
        cache.l1.clear()
        assert await cache.get(2) is None  # ... nor L2 (its value says when), nor L3
        await cache.put(record(3, tick))  # computed "now"
        assert await cache.get(3) == record(3, tick)
        now[0] += 31 * 10**9
        assert await cache.get(3) is None
        await cache.close()
        await warehouse.close()

    run(scenario())
