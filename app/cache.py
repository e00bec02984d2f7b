"""The signal cache hierarchy: L1 in-process, L2 Redis Cluster, L3 the warehouse.

A read goes L1 → L2 → L3 and fills the levels above it on the way back; a write goes
through every configured level. Each level counts its hits and misses
(``signal_cache_requests_total{level,result}``, ``signal_cache_hit_ratio{level}``).

* L1 (`L1Cache`): a bounded LRU with a TTL over an ``OrderedDict``: O(1) lookups,
  inserts and evictions, and no locks: the service runs on one event loop.
* L2 (`RedisL2`): one pooled redis-py asyncio ``RedisCluster`` client per process. A
  symbol's keys are hash-tagged (``{AAPL}:signal``) so they share a slot; multi-key
  reads and writes are pipelined (redis-py groups them per node and sends the groups
  concurrently); values are the compact binary `encode_signal` form (about 30 bytes,
  a quarter of the same signal as JSON), versioned by its first byte. TLS and
  IAM-token authentication (Memorystore) are switched on by configuration. Any L2
  failure is answered as a miss and L2 is skipped for ``cooldown_s``, so a failover or
  a dead cluster costs misses, never failed requests, and L2 is used again as soon as
  Redis answers.
* L3 (`SignalHistory`): the warehouse, read through for history (`app.warehouse`).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Generic, Literal, Protocol, TypeVar

import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.backoff import NoBackoff
from redis.credentials import CredentialProvider
from redis.exceptions import RedisClusterException, RedisError
from redis.retry import Retry

from app.signals import DIRECTION_DOWN, DIRECTION_UP, Signal
from app.telemetry import Metrics, default_metrics

log = structlog.get_logger("app.cache")

K = TypeVar("K")
V = TypeVar("V")

_NODE_PATTERN = r"^[A-Za-z0-9_.\-]+:\d{1,5}$"


class RedisConfig(BaseModel):
    """The L2 Redis Cluster (Memorystore in production)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    nodes: list[str] = Field(min_length=1)  # startup nodes, "host:port"
    tls: bool = False
    ca_file: Path | None = None  # CA bundle for TLS (Memorystore's server CA)
    auth: Literal["none", "password", "iam"] = "none"
    username: str | None = None
    password: SecretStr | None = None  # auth = "password"
    ttl_s: float = Field(default=300.0, gt=0, le=7 * 86_400)
    timeout_s: float = Field(default=0.25, gt=0, le=30)  # per command
    connect_timeout_s: float = Field(default=0.25, gt=0, le=30)
    cooldown_s: float = Field(default=0.5, ge=0, le=300)  # L2 skipped this long after a failure
    max_connections: int = Field(default=64, ge=1, le=10_000)
    retries: int = Field(default=0, ge=0, le=10)  # the cooldown, not retries, absorbs failures

    @model_validator(mode="after")
    def _check(self) -> RedisConfig:
        import re

        for i, node in enumerate(self.nodes):
            if not re.match(_NODE_PATTERN, node) or not 0 < int(node.rsplit(":", 1)[1]) < 65536:
                raise ValueError(f"nodes[{i}] = {node!r}: must be host:port with port 1-65535")
        if self.auth == "password" and self.password is None:
            raise ValueError("auth = 'password': password must be set")
        if self.auth != "password" and self.password is not None:
            raise ValueError(f"password is set but auth = {self.auth!r}: set auth = 'password'")
        if self.ca_file is not None and not self.tls:
            raise ValueError(f"ca_file = {str(self.ca_file)!r} needs tls = true")
        return self


class CacheConfig(BaseModel):
    """The cache hierarchy. No ``redis`` section: L1 (and L3) only."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    l1_max_entries: int = Field(default=100_000, ge=1, le=100_000_000)
    l1_ttl_s: float = Field(default=2.0, gt=0, le=86_400)
    redis: RedisConfig | None = None
    read_through_warehouse: bool = True


def signal_key(symbol: int) -> str:
    """The L2 key of a symbol's latest signal; the hash tag puts all of a symbol's keys in
    one slot (``{17}:signal``, ``{17}:...``), so they can share a pipeline or a script."""
    return f"{{{symbol}}}:signal"


_VALUE_VERSION = 1
# version, symbol, ts_ns, direction, strength, confidence, len(model_version)
_VALUE_HEAD = struct.Struct("<BiqBffB")


def encode_signal(signal: Signal) -> bytes:
    """The compact binary value L2 stores (strength and confidence are float32, as the
    model computes and the API carries them)."""
    version = signal.model_version.encode()
    if len(version) > 255:
        raise ValueError(f"model_version of symbol {signal.symbol}: at most 255 bytes")
    head = _VALUE_HEAD.pack(
        _VALUE_VERSION, signal.symbol, signal.ts_ns, signal.direction, signal.strength,
        signal.confidence, len(version),
    )  # fmt: skip
    return head + version


def decode_signal(data: bytes) -> Signal:
    """Inverse of `encode_signal`; ValueError on a value it did not write."""
    if len(data) < _VALUE_HEAD.size or data[0] != _VALUE_VERSION:
        raise ValueError(f"not a version-{_VALUE_VERSION} signal value ({len(data)} bytes)")
    _, symbol, ts, direction, strength, confidence, n = _VALUE_HEAD.unpack_from(data)
    if len(data) != _VALUE_HEAD.size + n or not DIRECTION_DOWN <= direction <= DIRECTION_UP:
        raise ValueError(f"corrupt signal value ({len(data)} bytes)")
    version = data[_VALUE_HEAD.size :].decode()
    return Signal(symbol, ts, direction, strength, confidence, version)


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

    def put(self, key: K, value: V) -> None:
        entries = self._entries
        entries[key] = (self._clock() + self.ttl_s, value)
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

TokenSource = Callable[[], tuple[str, float]]  # () -> (access token, expiry as epoch seconds)


class IamTokenCredentialProvider(CredentialProvider):
    """AUTH with a short-lived IAM access token as the password, as Memorystore's IAM
    authentication expects. Tokens are fetched from ``token_source`` (google-auth in
    production, a fake in tests) and reused until ``refresh_margin_s`` before expiry;
    every new connection authenticates with the current token."""

    def __init__(
        self,
        token_source: TokenSource,
        refresh_margin_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._source = token_source
        self._margin = refresh_margin_s
        self._clock = clock
        self._token: str | None = None
        self._expiry = 0.0
        self.fetches = 0

    def _fresh(self) -> bool:
        return self._token is not None and self._clock() < self._expiry - self._margin

    def get_credentials(self) -> tuple[str]:
        if not self._fresh():
            self._token, self._expiry = self._source()
            self.fetches += 1
        assert self._token is not None
        return (self._token,)

    async def get_credentials_async(self) -> tuple[str]:
        if self._fresh():
            assert self._token is not None
            return (self._token,)
        # google-auth's refresh is blocking HTTP: keep it off the event loop.
        return await asyncio.to_thread(self.get_credentials)


def google_token_source() -> TokenSource:  # pragma: no cover - the true edge (needs GCP)
    """Access tokens of the workload's Google identity (Workload Identity on GKE)."""
    import google.auth
    from google.auth.transport.requests import Request

    credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])

    def fetch() -> tuple[str, float]:
        credentials.refresh(Request())
        expiry = credentials.expiry
        return credentials.token, (expiry.timestamp() if expiry else time.time() + 300)

    return fetch


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
            credential_provider = IamTokenCredentialProvider(google_token_source())
        kwargs["credential_provider"] = credential_provider
    elif config.auth == "password":
        assert config.password is not None
        kwargs["username"] = config.username
        kwargs["password"] = config.password.get_secret_value()
    return kwargs


class RedisL2:
    """The L2 level: one pooled ``RedisCluster`` client, pipelined, failing soft.

    Reads and writes raise nothing: a failure counts an error, answers misses, and
    skips L2 for ``cooldown_s``; the client re-reads the cluster topology on its next
    use, so it follows failovers and a cluster that comes back.
    """

    def __init__(
        self,
        config: RedisConfig,
        metrics: Metrics | None = None,
        credential_provider: CredentialProvider | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.metrics = metrics or default_metrics()
        self.client = RedisCluster(**redis_client_kwargs(config, credential_provider))
        self._clock = clock
        self._skip_until = 0.0
        self._ttl_ms = int(config.ttl_s * 1000)
        self.failures = 0
        self.metrics.cache_available.labels("l2").set(1)

    @property
    def available(self) -> bool:
        """False while L2 is skipped after a failure."""
        return self._clock() >= self._skip_until

    async def _failed(self, exc: BaseException, op: str) -> None:
        self.failures += 1
        self.metrics.cache_errors.labels("l2").inc()
        was_available = self.available
        self._skip_until = self._clock() + self.config.cooldown_s
        self.metrics.cache_available.labels("l2").set(0)
        if was_available:
            log.warning(
                "cache_l2_unavailable", op=op, error=repr(exc), skip_s=self.config.cooldown_s
            )
        # Forget the topology and the pooled connections: the next use reconnects and
        # re-reads the slots (a replica may have been promoted, or the cluster restarted).
        with contextlib.suppress(Exception):
            await self.client.aclose()

    def _recovered(self) -> None:
        if self.failures and self.metrics.cache_available.labels("l2")._value.get() == 0:
            log.info("cache_l2_recovered")
        self.metrics.cache_available.labels("l2").set(1)

    async def get_many(self, symbols: Sequence[int]) -> dict[int, bytes] | None:
        """Values found for ``symbols``; None when L2 is skipped or failed."""
        if not symbols or not self.available:
            return None
        try:
            if len(symbols) == 1:
                values = [await self.client.get(signal_key(symbols[0]))]
            else:
                pipe = self.client.pipeline()
                for symbol in symbols:
                    pipe.get(signal_key(symbol))
                values = await pipe.execute()
        except (TimeoutError, RedisError, RedisClusterException, OSError) as exc:
            await self._failed(exc, "get")
            return None
        self._recovered()
        return {s: v for s, v in zip(symbols, values, strict=True) if isinstance(v, bytes)}

    async def set_many(self, items: dict[int, bytes]) -> bool:
        """Write ``{symbol: value}`` with the configured TTL; False when skipped or failed."""
        if not items or not self.available:
            return False
        try:
            if len(items) == 1:
                ((symbol, value),) = items.items()
                await self.client.set(signal_key(symbol), value, px=self._ttl_ms)
            else:
                pipe = self.client.pipeline()
                for symbol, value in items.items():
                    pipe.set(signal_key(symbol), value, px=self._ttl_ms)
                await pipe.execute()
        except (TimeoutError, RedisError, RedisClusterException, OSError) as exc:
            await self._failed(exc, "set")
            return False
        self._recovered()
        return True

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.aclose()


# --- L3 and the hierarchy ----------------------------------------------------------------


class SignalHistory(Protocol):
    """The warehouse as the cache sees it (`app.warehouse.Warehouse` implements it)."""

    async def latest_signals(self, symbols: Sequence[int]) -> dict[int, Signal]: ...

    def append_signals(self, signals: Sequence[Signal]) -> None: ...


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
        write_through_l3: bool = True,
    ) -> None:
        """``write_through_l3=False``: the caller writes the warehouse itself (the data path
        does, with room it reserved before doing the work)."""
        self.config = config
        self.metrics = metrics or default_metrics()
        self.l1: L1Cache[int, Signal] = L1Cache(config.l1_max_entries, config.l1_ttl_s, clock)
        self.l2 = l2
        self.l3 = l3 if config.read_through_warehouse else None
        self._writes_l3 = l3 if write_through_l3 else None
        requests = self.metrics.cache_requests
        self._hit = {lvl: requests.labels(lvl, "hit") for lvl in ("l1", "l2", "l3")}
        self._miss = {lvl: requests.labels(lvl, "miss") for lvl in ("l1", "l2", "l3")}
        self._entries = self.metrics.cache_entries

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

    async def get(self, symbol: int) -> Signal | None:
        record = self.l1.get(symbol)
        if record is not None:
            self._hit["l1"].inc()
            return record
        return (await self.get_many((symbol,))).get(symbol)

    async def get_many(self, symbols: Iterable[int]) -> dict[int, Signal]:
        """The latest signal of each symbol any level has; absent symbols are misses."""
        found: dict[int, Signal] = {}
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
                    record = _decode_or_none(raw) if raw is not None else None
                    if record is None:
                        still.append(symbol)
                    else:
                        found[symbol] = record
                        self._fill_l1(record)
                self._hit["l2"].inc(len(missing) - len(still))
                self._miss["l2"].inc(len(still))
                missing = still

        if missing and self.l3 is not None:
            try:
                history = await self.l3.latest_signals(missing)
            except Exception as exc:  # the warehouse failing must not fail the read
                self.metrics.cache_errors.labels("l3").inc()
                log.error("cache_l3_failed", error=repr(exc), symbols=len(missing))
                history = {}
            self._hit["l3"].inc(len(history))
            self._miss["l3"].inc(len(missing) - len(history))
            if history:
                for record in history.values():
                    found[record.symbol] = record
                    self._fill_l1(record)
                if self.l2 is not None:
                    await self.l2.set_many({s: encode_signal(r) for s, r in history.items()})
        self._entries.set(len(self.l1))
        return found

    def _fill_l1(self, record: Signal) -> None:
        # A lower level must not overwrite a newer signal written while we awaited it.
        current = self.l1.get(record.symbol)
        if current is None or current.ts_ns <= record.ts_ns:
            self.l1.put(record.symbol, record)

    async def put(self, record: Signal) -> None:
        await self.put_many((record,))

    async def put_many(self, records: Sequence[Signal]) -> None:
        """Write through: L1 now, L2 in one pipeline, L3 into the warehouse's write batch."""
        latest: dict[int, Signal] = {}
        for record in records:
            self.l1.put(record.symbol, record)
            latest[record.symbol] = record
        self._entries.set(len(self.l1))
        if self.l2 is not None:
            await self.l2.set_many({s: encode_signal(r) for s, r in latest.items()})
        if self._writes_l3 is not None:
            self._writes_l3.append_signals(records)

    async def close(self) -> None:
        if self.l2 is not None:
            await self.l2.close()


def _decode_or_none(raw: bytes) -> Signal | None:
    try:
        return decode_signal(raw)
    except ValueError:
        return None  # a value another version wrote: a miss, refilled below
