"""The signal cache hierarchy: L1 in-process, L2 Redis Cluster, L3 the warehouse.

A read goes L1 → L2 → L3 and fills the levels above it on the way back; a write goes
through every configured level. Each level counts its hits and misses
(``signal_cache_requests_total{level,result}``: a hit ratio over any window is a ratio of
their rates).

* L1 (`L1Cache`): a bounded LRU with a TTL over an ``OrderedDict``: O(1) lookups,
  inserts and evictions, and no locks: the service runs on one event loop.
* L2 (`RedisL2`): one pooled redis-py asyncio ``RedisCluster`` client per process. A
  symbol's keys are hash-tagged (``{AAPL}:signal``) so they share a slot; multi-key
  reads and writes are pipelined (redis-py groups them per node and sends the groups
  concurrently); values are the compact binary `encode_signal` form (about 30 bytes,
  a quarter of the same signal as JSON), versioned by its first byte. TLS and
  IAM-token authentication (Memorystore, tokens from `app.gcp_auth`) are switched on by
  configuration. Any L2 failure is answered as a miss and opens L2's circuit breaker
  (`app.breaker`): L2 is skipped for ``cooldown_s``, then one call probes it, so a
  failover or a dead cluster costs misses, never failed requests, and L2 is used again
  as soon as Redis answers.
* L3 (`SignalHistory`): the warehouse, read through for history (`app.warehouse`).

Every level answers only signals computed less than ``max_signal_age_s`` ago (a miss
otherwise): an L1 entry expires by then, an L2 key's TTL ends by then and its value
carries the time, and the L3 query asks for nothing older. L2 writes are ordered by the
signal's tick time: a write never replaces a value with a newer tick (a Lua script
compares them on the server), so a late write, from a slow batch or another replica,
cannot roll a symbol back. The data path writes the signals this process computed with
`submit`: to L2 only, by a background writer that keeps each symbol's newest pending
value (the in-process store answers them here; L1 holds what other replicas computed).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import structlog
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.backoff import NoBackoff
from redis.credentials import CredentialProvider
from redis.exceptions import RedisClusterException, RedisError
from redis.retry import Retry

from app.breaker import CircuitBreaker
from app.gcp_auth import AccessTokens
from app.settings.cache import CacheConfig, RedisConfig
from app.signals import DIRECTION_DOWN, DIRECTION_UP, Signal, SignalColumns
from app.telemetry import Metrics, default_metrics

log = structlog.get_logger("app.cache")

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")


def signal_key(symbol: int) -> str:
    """The L2 key of a symbol's latest signal; the hash tag puts all of a symbol's keys in
    one slot (``{17}:signal``, ``{17}:...``), so they can share a pipeline or a script."""
    return f"{{{symbol}}}:signal"


_VALUE_VERSION = 2
# version, symbol, ts_ns, direction, strength, confidence, computed_at_ns; then four
# length-prefixed strings: model_version, model_variant, model_sha256, backend
_VALUE_HEAD = struct.Struct("<BiqBffq")

# SET the value unless the stored one is of a tick at least as new. The tick time is the
# little-endian int64 at byte 6 (1-based), compared as (high int32, low uint32) so Lua's
# doubles hold each half exactly.
_SET_IF_NEWER = """
local current = redis.call('GET', KEYS[1])
if current and string.byte(current, 1) == 2 then
  local clo, chi = struct.unpack('<I4i4', current, 6)
  local nlo, nhi = struct.unpack('<I4i4', ARGV[1], 6)
  if chi > nhi or (chi == nhi and clo >= nlo) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""


# The _VALUE_HEAD layout as numpy columns (packed, little endian), to encode many at once.
_VALUE_HEAD_COLUMNS = np.dtype(
    [("version", "u1"), ("symbol", "<i4"), ("ts_ns", "<i8"), ("direction", "u1"),
     ("strength", "<f4"), ("confidence", "<f4"), ("computed_at_ns", "<i8")]
)  # fmt: skip


def _value_strings(source: Any) -> bytes:
    parts: list[bytes] = []
    for name in _VALUE_STRINGS:
        text = getattr(source, name).encode()
        if len(text) > 255:
            raise ValueError(f"{name} {text[:40]!r}...: at most 255 bytes")
        parts += (bytes((len(text),)), text)
    return b"".join(parts)


def encode_signals(signals: SignalColumns, computed_at_ns: int) -> list[bytes]:
    """`encode_signal` of every row of ``signals``, from the columns (no object per row)."""
    n = len(signals)
    head = np.empty(n, dtype=_VALUE_HEAD_COLUMNS)
    head["version"] = _VALUE_VERSION
    head["symbol"] = signals.symbol
    head["ts_ns"] = signals.ts_ns
    head["direction"] = signals.direction
    head["strength"] = signals.strength
    head["confidence"] = signals.confidence
    head["computed_at_ns"] = computed_at_ns
    raw, size, tail = head.tobytes(), _VALUE_HEAD.size, _value_strings(signals)
    return [raw[i * size : (i + 1) * size] + tail for i in range(n)]


def encode_signal(signal: Signal, computed_at_ns: int = 0) -> bytes:
    """The compact binary value L2 stores (strength and confidence are float32, as the
    model computes and the API carries them), with when it was computed."""
    head = _VALUE_HEAD.pack(
        _VALUE_VERSION, signal.symbol, signal.ts_ns, signal.direction, signal.strength,
        signal.confidence, computed_at_ns,
    )  # fmt: skip
    return head + _value_strings(signal)


_VALUE_STRINGS = ("model_version", "model_variant", "model_sha256", "backend")


def decode_value(data: bytes) -> tuple[Signal, int]:
    """``(signal, computed_at_ns)`` of an `encode_signal` value; ValueError on another."""
    if len(data) < _VALUE_HEAD.size or data[0] != _VALUE_VERSION:
        raise ValueError(f"not a version-{_VALUE_VERSION} signal value ({len(data)} bytes)")
    _, symbol, ts, direction, strength, confidence, computed_at = _VALUE_HEAD.unpack_from(data)
    if not DIRECTION_DOWN <= direction <= DIRECTION_UP:
        raise ValueError(f"corrupt signal value ({len(data)} bytes): direction {direction}")
    strings: list[str] = []
    i = _VALUE_HEAD.size
    for _ in _VALUE_STRINGS:
        n = data[i] if i < len(data) else -1
        if n < 0 or i + 1 + n > len(data):
            raise ValueError(f"corrupt signal value ({len(data)} bytes)")
        strings.append(data[i + 1 : i + 1 + n].decode())
        i += 1 + n
    if i != len(data):
        raise ValueError(f"corrupt signal value ({len(data)} bytes)")
    return Signal(symbol, ts, direction, strength, confidence, *strings), computed_at


def decode_signal(data: bytes) -> Signal:
    """The signal of an `encode_signal` value; ValueError on a value it did not write."""
    return decode_value(data)[0]


# --- L1 ---------------------------------------------------------------------------------


class L1Cache(Generic[K, V]):
    """Bounded LRU with per-entry TTL: O(1) get, put and eviction; not thread-safe by design
    (one event loop owns it, so the hot path takes no lock)."""

    __slots__ = ("_clock", "_entries", "max_entries", "ttl_s")

    def __init__(
        self, max_entries: int, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_entries < 1 or ttl_s <= 0:
            raise ValueError(f"max_entries = {max_entries}, ttl_s = {ttl_s}: both must be > 0")
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: K, value: V, ttl_s: float | None = None) -> None:
        """Store ``value`` for ``ttl_s`` (at most the cache's TTL)."""
        ttl = self.ttl_s if ttl_s is None else min(ttl_s, self.ttl_s)
        if ttl <= 0:
            return
        entries = self._entries
        entries[key] = (self._clock() + ttl, value)
        entries.move_to_end(key)
        if len(entries) > self.max_entries:
            entries.popitem(last=False)  # the least recently used

    def pop(self, key: K) -> V | None:
        entry = self._entries.pop(key, None)
        return None if entry is None else entry[1]

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: K) -> bool:
        return self.get(key) is not None


# --- L2 ---------------------------------------------------------------------------------


class IamTokenCredentialProvider(CredentialProvider):
    """AUTH with the workload's IAM access token as the password, as Memorystore's IAM
    authentication expects: every new connection authenticates with the current token
    (`app.gcp_auth.AccessTokens`, refreshed when due)."""

    def __init__(self, tokens: AccessTokens) -> None:
        self.tokens = tokens

    def get_credentials(self) -> tuple[str]:
        return (self.tokens(),)

    async def get_credentials_async(self) -> tuple[str]:
        return (await self.tokens.token_async(),)


def redis_client_kwargs(
    config: RedisConfig, credential_provider: CredentialProvider | None = None
) -> dict[str, Any]:
    """The ``RedisCluster`` arguments ``config`` asks for (separate so tests can read them)."""
    kwargs: dict[str, Any] = {
        "startup_nodes": [
            ClusterNode(host, int(port)) for host, port in (n.rsplit(":", 1) for n in config.nodes)
        ],
        "socket_timeout": config.timeout_s,
        "socket_connect_timeout": config.connect_timeout_s,
        "max_connections": config.max_connections,
        "retry": Retry(NoBackoff(), config.retries),
        # During a failover some slots are briefly unserved; the others keep working.
        "require_full_coverage": False,
        "decode_responses": False,
    }
    if config.tls:
        kwargs["ssl"] = True
        kwargs["ssl_cert_reqs"] = "required"
        if config.ca_file is not None:
            kwargs["ssl_ca_certs"] = str(config.ca_file)
    if config.auth == "iam":
        if credential_provider is None:
            credential_provider = IamTokenCredentialProvider(AccessTokens())
        kwargs["credential_provider"] = credential_provider
    elif config.auth == "password":
        assert config.password is not None
        kwargs["username"] = config.username
        kwargs["password"] = config.password.get_secret_value()
    return kwargs


class RedisL2:
    """The L2 level: one pooled ``RedisCluster`` client, pipelined, failing soft.

    Reads and writes raise nothing: a failure counts an error, answers misses, and opens
    the breaker: L2 is skipped for ``cooldown_s``, then one call probes it. After a failure
    the client re-reads the cluster topology on its next use, so it follows failovers and
    a cluster that comes back.
    """

    def __init__(
        self,
        config: RedisConfig,
        metrics: Metrics | None = None,
        credential_provider: CredentialProvider | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.metrics = metrics = metrics or default_metrics()
        self.client = RedisCluster(**redis_client_kwargs(config, credential_provider))
        self.breaker = CircuitBreaker(1, config.cooldown_s, clock, name="cache L2 (Redis)")
        self._ttl_ms = int(config.ttl_s * 1000)
        self.failures = 0
        self._errors = metrics.cache_errors.labels("l2")
        self._available = metrics.cache_available.labels("l2")
        self._available.set(1)

    async def _call(self, op: str, call: Callable[[], Awaitable[T]]) -> T | None:
        """``call()`` unless the breaker is open; None when skipped or failed."""
        if not self.breaker.allow():
            return None
        try:
            result = await call()
        except (TimeoutError, RedisError, RedisClusterException, OSError) as exc:
            await self._failed(exc, op)
            return None
        except BaseException:
            self.breaker.abandon()  # cancelled: no verdict on Redis
            raise
        self.breaker.record_success()
        self._available.set(1)
        return result

    async def _failed(self, exc: BaseException, op: str) -> None:
        self.failures += 1
        self._errors.inc()
        if self.breaker.state == "closed":
            log.warning("cache_l2_failed", op=op, error=repr(exc))
        self.breaker.record_failure()
        self._available.set(0)
        # Forget the topology and the pooled connections: the next use reconnects and
        # re-reads the slots (a replica may have been promoted, or the cluster restarted).
        with contextlib.suppress(Exception):
            await self.client.aclose()

    async def get_many(self, symbols: Sequence[int]) -> dict[int, bytes] | None:
        """Values found for ``symbols``; None when L2 is skipped or failed."""
        if not symbols:
            return None

        async def get() -> list[Any]:
            if len(symbols) == 1:
                return [await self.client.get(signal_key(symbols[0]))]
            pipe = self.client.pipeline()
            for symbol in symbols:
                pipe.get(signal_key(symbol))
            return await pipe.execute()

        values = await self._call("get", get)
        if values is None:
            return None
        return {s: v for s, v in zip(symbols, values, strict=True) if isinstance(v, bytes)}

    async def set_many(self, items: dict[int, tuple[bytes, int]]) -> bool:
        """Write ``{symbol: (value, ttl_ms)}`` where the stored value is of an older tick
        (`_SET_IF_NEWER`, on the server); False when skipped or failed."""
        if not items:
            return False

        async def put() -> bool:
            if len(items) == 1:
                ((symbol, (value, ttl_ms)),) = items.items()
                await self.client.eval(_SET_IF_NEWER, 1, signal_key(symbol), value, ttl_ms)
            else:
                pipe = self.client.pipeline()
                for symbol, (value, ttl_ms) in items.items():
                    pipe.eval(_SET_IF_NEWER, 1, signal_key(symbol), value, ttl_ms)
                await pipe.execute()
            return True

        return await self._call("set", put) is not None

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.aclose()


# --- L3 and the hierarchy ----------------------------------------------------------------


class SignalHistory(Protocol):
    """The warehouse as the cache sees it (`app.warehouse.Warehouse` implements it)."""

    async def latest_timed(
        self, symbols: Sequence[int], computed_since_ns: int | None = None
    ) -> dict[int, tuple[Signal, int]]: ...

    def append_signals(
        self, signals: Sequence[Signal], *, computed_at_ns: int | None = None
    ) -> bool: ...


class TieredCache:
    """Latest signal per symbol through L1 → L2 → L3, filling upward, writing through."""

    def __init__(
        self,
        config: CacheConfig,
        *,
        l2: RedisL2 | None = None,
        l3: SignalHistory | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock_ns: Callable[[], int] = time.time_ns,
        write_through_l3: bool = True,
    ) -> None:
        """``write_through_l3=False``: the caller writes the warehouse itself (the data path
        does, with room it reserved before doing the work)."""
        self.config = config
        self.metrics = metrics or default_metrics()
        # symbol -> (signal, when it was computed)
        self.l1: L1Cache[int, tuple[Signal, int]] = L1Cache(config.l1_max_entries,
                                                             config.l1_ttl_s, clock)  # fmt: skip
        self.l2 = l2
        self.l3 = l3 if config.read_through_warehouse else None
        self._writes_l3 = l3 if write_through_l3 else None
        self._now_ns = wall_clock_ns
        self._max_age_ns = (
            None if config.max_signal_age_s is None else int(config.max_signal_age_s * 1e9)
        )
        requests = self.metrics.cache_requests
        self._hit = {lvl: requests.labels(lvl, "hit") for lvl in ("l1", "l2", "l3")}
        self._miss = {lvl: requests.labels(lvl, "miss") for lvl in ("l1", "l2", "l3")}
        self._entries = self.metrics.cache_entries
        # symbol -> (tick time, value, ttl_ms) of its newest value not yet written to L2
        self._l2_pending: dict[int, tuple[int, bytes, int]] = {}
        self._l2_wake = asyncio.Event()
        self._l2_writer: asyncio.Task[None] | None = None
        self._closing = False

    @classmethod
    def from_config(
        cls,
        config: CacheConfig,
        *,
        l3: SignalHistory | None = None,
        metrics: Metrics | None = None,
        credential_provider: CredentialProvider | None = None,
        write_through_l3: bool = True,
    ) -> TieredCache:
        metrics = metrics or default_metrics()
        l2 = None
        if config.redis is not None:
            l2 = RedisL2(config.redis, metrics, credential_provider)
        return cls(config, l2=l2, l3=l3, metrics=metrics, write_through_l3=write_through_l3)

    # --- age ---------------------------------------------------------------------------------

    def remaining_s(self, computed_at_ns: int) -> float:
        """Seconds a signal computed at ``computed_at_ns`` may still be served (inf: no limit)."""
        if self._max_age_ns is None:
            return float("inf")
        return (computed_at_ns + self._max_age_ns - self._now_ns()) / 1e9

    def fresh(self, computed_at_ns: int) -> bool:
        return self.remaining_s(computed_at_ns) > 0

    # --- reads -------------------------------------------------------------------------------

    async def get(self, symbol: int) -> Signal | None:
        timed = await self.get_timed(symbol)
        return None if timed is None else timed[0]

    async def get_timed(self, symbol: int) -> tuple[Signal, int] | None:
        """The latest fresh signal of ``symbol`` and when it was computed (ns), or None."""
        record = self.l1.get(symbol)
        if record is not None:
            self._hit["l1"].inc()
            return record
        return (await self.get_many_timed((symbol,))).get(symbol)

    async def get_many(self, symbols: Iterable[int]) -> dict[int, Signal]:
        """The latest fresh signal of each symbol any level has; absent symbols are misses."""
        return {s: t[0] for s, t in (await self.get_many_timed(symbols)).items()}

    async def get_many_timed(self, symbols: Iterable[int]) -> dict[int, tuple[Signal, int]]:
        found: dict[int, tuple[Signal, int]] = {}
        missing: list[int] = []
        for symbol in symbols:
            record = self.l1.get(symbol)
            if record is None:
                missing.append(symbol)
            else:
                found[symbol] = record
        self._hit["l1"].inc(len(found))
        if not missing:
            return found
        self._miss["l1"].inc(len(missing))

        if self.l2 is not None:
            values = await self.l2.get_many(missing)
            if values is not None:
                still: list[int] = []
                for symbol in missing:
                    raw = values.get(symbol)
                    timed = _decode_or_none(raw) if raw is not None else None
                    if timed is None or not self.fresh(timed[1]):
                        still.append(symbol)
                    else:
                        found[symbol] = timed
                        self._fill_l1(*timed)
                self._hit["l2"].inc(len(missing) - len(still))
                self._miss["l2"].inc(len(still))
                missing = still

        if missing and self.l3 is not None:
            since = None if self._max_age_ns is None else self._now_ns() - self._max_age_ns
            try:
                history = await self.l3.latest_timed(missing, since)
            except Exception as exc:  # the warehouse failing must not fail the read
                self.metrics.cache_errors.labels("l3").inc()
                log.error("cache_l3_failed", error=repr(exc), symbols=len(missing))
                history = {}
            history = {s: t for s, t in history.items() if self.fresh(t[1])}
            self._hit["l3"].inc(len(history))
            self._miss["l3"].inc(len(missing) - len(history))
            if history:
                for record, computed_at in history.values():
                    found[record.symbol] = (record, computed_at)
                    self._fill_l1(record, computed_at)
                if self.l2 is not None:
                    await self.l2.set_many(self._l2_values(history.values()))
        self._entries.set(len(self.l1))
        return found

    def _fill_l1(self, record: Signal, computed_at_ns: int) -> None:
        # A lower level must not overwrite a newer signal written while we awaited it.
        current = self.l1.get(record.symbol)
        if current is None or current[0].ts_ns <= record.ts_ns:
            self.l1.put(record.symbol, (record, computed_at_ns), self.remaining_s(computed_at_ns))

    def _l2_values(self, timed: Iterable[tuple[Signal, int]]) -> dict[int, tuple[bytes, int]]:
        """``{symbol: (value, ttl_ms)}``: the key lives no longer than the signal may be served."""
        assert self.l2 is not None
        ttl_s = self.l2.config.ttl_s
        out: dict[int, tuple[bytes, int]] = {}
        for record, computed_at in timed:
            ttl_ms = int(min(ttl_s, self.remaining_s(computed_at)) * 1000)
            if ttl_ms > 0:
                out[record.symbol] = (encode_signal(record, computed_at), ttl_ms)
        return out

    # --- writes ------------------------------------------------------------------------------

    async def put(self, record: Signal, computed_at_ns: int | None = None) -> None:
        await self.put_many((record,), computed_at_ns)

    async def put_many(self, records: Sequence[Signal], computed_at_ns: int | None = None) -> None:
        """Write through: L1 now, L2 in one pipeline, L3 into the warehouse's write batch."""
        computed_at = self._now_ns() if computed_at_ns is None else computed_at_ns
        latest = self._put_l1(records, computed_at)
        if self.l2 is not None:
            await self.l2.set_many(self._l2_values((r, computed_at) for r in latest.values()))
        if self._writes_l3 is not None:
            self._writes_l3.append_signals(records, computed_at_ns=computed_at)

    def submit(self, signals: SignalColumns, computed_at_ns: int) -> None:
        """Write this process's new signals without waiting: to L2, by the background writer,
        which sends only each symbol's newest pending value (the data path's write; not to
        L1, since the in-process store answers these, nor to L3)."""
        if self.l2 is None or not len(signals):
            return
        ttl_ms = int(min(self.l2.config.ttl_s, self.remaining_s(computed_at_ns)) * 1000)
        if ttl_ms <= 0:
            return
        pending = self._l2_pending
        values = encode_signals(signals, computed_at_ns)
        for symbol, ts, value in zip(signals.symbol.tolist(), signals.ts_ns.tolist(), values,
                                     strict=True):  # fmt: skip
            queued = pending.get(symbol)
            if queued is None or queued[0] <= ts:
                pending[symbol] = (ts, value, ttl_ms)
        if self._l2_writer is None:
            self._l2_writer = asyncio.get_running_loop().create_task(
                self._write_l2(), name="cache-l2-writer"
            )
        self._l2_wake.set()

    def _put_l1(self, records: Sequence[Signal], computed_at_ns: int) -> dict[int, Signal]:
        latest: dict[int, Signal] = {}
        remaining = self.remaining_s(computed_at_ns)
        for record in records:
            current = self.l1.get(record.symbol)
            if current is None or current[0].ts_ns <= record.ts_ns:
                self.l1.put(record.symbol, (record, computed_at_ns), remaining)
            latest[record.symbol] = record
        self._entries.set(len(self.l1))
        return latest

    async def _write_l2(self) -> None:
        assert self.l2 is not None
        while True:
            if not self._l2_pending:
                if self._closing:
                    return
                self._l2_wake.clear()
                await self._l2_wake.wait()
                continue
            batch, self._l2_pending = self._l2_pending, {}
            # Fails soft (L2 is a cache); the script keeps a newer value already there.
            await self.l2.set_many({s: (value, ttl) for s, (_, value, ttl) in batch.items()})

    async def close(self) -> None:
        self._closing = True
        self._l2_wake.set()
        if self._l2_writer is not None:
            await self._l2_writer
        if self.l2 is not None:
            await self.l2.close()


def _decode_or_none(raw: bytes) -> tuple[Signal, int] | None:
    try:
        return decode_value(raw)
    except ValueError:
        return None  # a value another version wrote: a miss, refilled below
