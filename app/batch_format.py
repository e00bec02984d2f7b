"""The published batch format: columns → protobuf entries → one compressed ``PublishedBatch``.

A batch topic message (``signals.proto``) is a ``PublishedBatch`` envelope (schema version,
codec, record type, counts, the service batches it carries) whose ``payload`` is a standard
zstd or LZ4 frame of one ``BatchPayload``: the ``TickBatch`` or ``SignalBatch`` entries of
one ordering shard, one per service batch. A consumer in any language reads it with stock
libraries: protobuf, then zstd or LZ4.

Entries are written straight from numpy columns in protobuf's wire format (packed varints,
little-endian fixed-width numbers, fields in number order), which is what protobuf's own
serializer writes for them (tests hold the two byte for byte equal): building messages
field by field from Python lists cost ten times more per batch. A protobuf message is the
concatenation of its fields, so the publisher joins entries as bytes: the joined entries
parse as one ``BatchPayload`` with every entry in order.
"""

from __future__ import annotations

import functools
import struct
from typing import Any

import lz4.frame
import numpy as np
import zstandard
from numba import njit

from app.settings.publish import Codec

SCHEMA_VERSION = 1
TICK_BATCH = "signals.v1.TickBatch"
SIGNAL_BATCH = "signals.v1.SignalBatch"
RECORD_TYPES = (TICK_BATCH, SIGNAL_BATCH)

# The signals.proto Codec enum's numbers.
CODEC_NUMBERS: dict[str, int] = {"none": 1, "zstd": 2, "lz4": 3}
CODEC_NAMES: dict[int, str] = {v: k for k, v in CODEC_NUMBERS.items()}

_LEN, _I64 = 2, 1  # wire types: length-delimited, 64-bit


def varint(n: int) -> bytes:
    """``n`` (0 <= n < 2**64) as a protobuf varint."""
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return varint(field << 3 | wire_type)


def length_delimited(field: int, data: bytes) -> bytes:
    return _key(field, _LEN) + varint(len(data)) + data


@njit(cache=True, nogil=True)
def _varint_size(x: int | np.integer) -> int:
    n = 1
    while x >= 0x80:
        x >>= 7
        n += 1
    return n


@njit(cache=True, nogil=True)
def _put_varint(out: np.ndarray, i: int, x: int | np.integer) -> int:
    while x >= 0x80:
        out[i] = (x & 0x7F) | 0x80
        x >>= 7
        i += 1
    out[i] = x
    return i + 1


@njit(cache=True, nogil=True)
def _encode_varints(v: np.ndarray, out: np.ndarray, offsets: np.ndarray) -> int:
    """``v`` (uint64) as varints into ``out``, each one's start into ``offsets``; the length."""
    i = 0
    for k in range(v.shape[0]):
        offsets[k] = i
        i = _put_varint(out, i, v[k])
    offsets[v.shape[0]] = i
    return i


def varints(values: np.ndarray) -> tuple[bytes, np.ndarray]:
    """Integers as consecutive protobuf varints (negative ones as ten bytes, as protobuf
    writes an int32 or int64) and each value's start offset (length n + 1)."""
    v = np.ascontiguousarray(values).astype(np.int64).view(np.uint64)
    out = np.empty(10 * v.size, np.uint8)
    offsets = np.empty(v.size + 1, np.int64)
    return out[: _encode_varints(v, out, offsets)].tobytes(), offsets


class _Packed:
    """One column of sorted rows, encoded once; `slice` gives any run of rows as a packed
    repeated field."""

    def __init__(self, field: int, values: np.ndarray, dtype: str | None) -> None:
        self.field = field
        self.key = _key(field, _LEN)
        if dtype is None:  # varints
            self.data, self.offsets = varints(values)
            self.width = 0
        else:  # fixed width, little endian
            self.data = np.ascontiguousarray(values, dtype=dtype).tobytes()
            self.width = np.dtype(dtype).itemsize
            self.offsets = np.zeros(0, dtype=np.int64)

    def slice(self, lo: int, hi: int) -> bytes:
        if self.width:
            chunk = self.data[lo * self.width : hi * self.width]
        else:
            chunk = self.data[int(self.offsets[lo]) : int(self.offsets[hi])]
        return self.key + varint(len(chunk)) + chunk if chunk else b""


def packed(field: int, values: np.ndarray, dtype: str | None = None) -> bytes:
    """``values`` as one packed repeated field: varints (``dtype`` None) or fixed-width
    little-endian numbers of ``dtype``; nothing when there are none (as proto3 writes)."""
    return _Packed(field, values, dtype).slice(0, len(values))


def runs(groups: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Rows ordered by group, keeping their order within each (a stable sort), and each
    group's ``(group, first, end)`` run in that order."""
    order = np.argsort(groups, kind="stable")
    ordered = groups[order]
    if ordered.size == 0:
        return order, []
    bounds = [0, *(np.flatnonzero(ordered[1:] != ordered[:-1]) + 1).tolist(), int(ordered.size)]
    starts = ordered[bounds[:-1]].tolist()
    return order, [(g, lo, hi) for g, lo, hi in zip(starts, bounds[:-1], bounds[1:], strict=True)]


_ENTRY_TICKS, _ENTRY_SIGNALS = 1, 2  # BatchPayload's entry fields (3: their sequence numbers)


def tick_batch(symbol: np.ndarray, price: np.ndarray, size: np.ndarray, ts_ns: np.ndarray) -> bytes:
    """A serialized ``TickBatch`` of these columns (no batch id, no producer)."""
    n = len(symbol)
    return b"".join(c.slice(0, n) for c in _tick_columns(symbol, price, size, ts_ns))


def _tick_columns(symbol: np.ndarray, price: np.ndarray, size: np.ndarray,
                  ts_ns: np.ndarray) -> tuple[_Packed, ...]:  # fmt: skip
    return (_Packed(1, symbol, None), _Packed(2, price, "<f8"), _Packed(3, size, "<f8"),
            _Packed(4, ts_ns, "<i8"))  # fmt: skip


@njit(cache=True, nogil=True)
def _assemble_entries(data, offsets, fields, suffixes, suffix_bounds, entry_field, seqs, bounds,
                      out, ends):  # fmt: skip
    """Every group's BatchPayload fragment into ``out``, one after the other (group g ends
    at ``ends[g]``): per group, the entry (field ``entry_field``) of each column's packed
    field (column c's rows ``bounds[g]`` to ``bounds[g + 1]`` are ``data[offsets[c, lo] :
    offsets[c, hi]]``, under field ``fields[c]``; none when empty) and its suffix
    (``suffixes[suffix_bounds[g] : suffix_bounds[g + 1]]``), then its sequence number
    ``seqs[g]`` (field 3): one BatchPayload fragment per group, in one pass."""
    i = 0
    for g in range(bounds.shape[0] - 1):
        lo, hi = bounds[g], bounds[g + 1]
        s0, s1 = suffix_bounds[g], suffix_bounds[g + 1]
        size = s1 - s0
        for c in range(fields.shape[0]):
            n = offsets[c, hi] - offsets[c, lo]
            if n:
                size += _varint_size(fields[c] << 3 | 2) + _varint_size(n) + n
        i = _put_varint(out, i, entry_field << 3 | 2)
        i = _put_varint(out, i, size)
        for c in range(fields.shape[0]):
            a, b = offsets[c, lo], offsets[c, hi]
            if b > a:
                i = _put_varint(out, i, fields[c] << 3 | 2)
                i = _put_varint(out, i, b - a)
                out[i : i + b - a] = data[a:b]
                i += b - a
        out[i : i + s1 - s0] = suffixes[s0:s1]
        i += s1 - s0
        i = _put_varint(out, i, 3 << 3 | 2)
        i = _put_varint(out, i, _varint_size(seqs[g]))
        i = _put_varint(out, i, seqs[g])
        ends[g] = i
    return i


Entry = tuple[int, bytes, int, int]  # (ordering group, BatchPayload fragment, rows, seq)


def _entries(entry_field: int, columns: tuple[_Packed, ...], spans: list[tuple[int, int, int]],
             seqs: np.ndarray, suffixes: list[bytes]) -> list[Entry]:  # fmt: skip
    """``(group, fragment, rows, seq)`` per span of the (group-ordered) columns, span k of
    service batch ``seqs[k]`` with suffix ``suffixes[k]``: `_assemble_entries` over the
    columns' encodings laid end to end."""
    n = max(hi for _, _, hi in spans)
    data = np.frombuffer(b"".join(c.data for c in columns), np.uint8)
    offsets = np.empty((len(columns), n + 1), np.int64)
    base = 0
    for row, c in zip(offsets, columns, strict=True):
        row[:] = base + (c.offsets if not c.width else np.arange(n + 1, dtype=np.int64) * c.width)
        base += len(c.data)
    fields = np.array([c.field for c in columns], np.int64)
    bounds = np.array([lo for _, lo, _ in spans] + [n], np.int64)
    suffix_bounds = np.zeros(len(spans) + 1, np.int64)
    np.cumsum([len(x) for x in suffixes], out=suffix_bounds[1:])
    out = np.empty(len(data) + int(suffix_bounds[-1]) + len(spans) * (24 + 16 * len(columns)),
                   np.uint8)  # fmt: skip
    ends = np.empty(len(spans), np.int64)
    _assemble_entries(data, offsets, fields, np.frombuffer(b"".join(suffixes), np.uint8),
                      suffix_bounds, entry_field, seqs, bounds, out, ends)  # fmt: skip
    blob = out[: ends[-1]].tobytes()
    starts = [0, *ends[:-1].tolist()]
    return [(group, blob[a:b], hi - lo, seq)
            for (group, lo, hi), a, b, seq in zip(spans, starts, ends.tolist(), seqs.tolist(),
                                                   strict=True)]  # fmt: skip


def _batch_spans(groups: np.ndarray, seqs: int | np.ndarray
                 ) -> tuple[np.ndarray, list[tuple[int, int, int]], np.ndarray]:  # fmt: skip
    """The rows ordered by group, keeping their order within each (a stable sort), and the
    ``(group, first, end)`` runs of one group and one service batch in that order, with each
    run's seq. ``seqs``: each row's service batch (in order), or one for every row."""
    order = np.argsort(groups, kind="stable")
    group = groups[order]
    seq = np.broadcast_to(np.asarray(seqs, np.int64), group.shape)[order]
    if group.size == 0:
        return order, [], seq
    cuts = np.flatnonzero((group[1:] != group[:-1]) | (seq[1:] != seq[:-1])) + 1
    bounds = [0, *cuts.tolist(), int(group.size)]
    starts = bounds[:-1]
    spans = list(zip(group[starts].tolist(), starts, bounds[1:], strict=True))
    return order, spans, seq[starts]


def tick_entries(
    groups: np.ndarray, seqs: int | np.ndarray, symbol: np.ndarray, price: np.ndarray,
    size: np.ndarray, ts_ns: np.ndarray,
) -> list[Entry]:  # fmt: skip
    """``(group, BatchPayload fragment, ticks, seq)`` per group of rows and service batch
    (``groups[i]`` is row i's ordering shard, ``seqs`` its service batch or one for all):
    each group's ticks of each batch as one TickBatch entry, in batch order."""
    order, spans, span_seqs = _batch_spans(groups, seqs)
    if not spans:
        return []
    columns = _tick_columns(symbol[order], price[order], size[order], ts_ns[order])
    return _entries(_ENTRY_TICKS, columns, spans, span_seqs, [b""] * len(spans))


def signal_entries(groups: np.ndarray, seqs: int | np.ndarray, signals: Any,
                   computed_at_ns: int | dict[int, int]) -> list[Entry]:  # fmt: skip
    """``(group, BatchPayload fragment, signals, seq)`` per group of rows and service batch:
    each group's signals (an `app.signals.SignalColumns`) of each batch as one SignalBatch
    entry, with the model that computed them and when (``computed_at_ns``: one time, or
    each batch's by seq)."""
    order, spans, span_seqs = _batch_spans(groups, seqs)
    if not spans:
        return []
    columns = (
        _Packed(2, signals.symbol[order], None),
        _Packed(3, signals.ts_ns[order], "<i8"),
        _Packed(4, signals.direction[order], None),
        _Packed(5, signals.strength[order], "<f4"),
        _Packed(6, signals.confidence[order], "<f4"),
    )
    if isinstance(computed_at_ns, int):
        suffixes = [_model_fields(signals, computed_at_ns)] * len(spans)
    else:
        by_seq = {seq: _model_fields(signals, at) for seq, at in computed_at_ns.items()}
        suffixes = [by_seq[seq] for seq in span_seqs.tolist()]
    return _entries(_ENTRY_SIGNALS, columns, spans, span_seqs, suffixes)


def _model_fields(signals: Any, computed_at_ns: int) -> bytes:
    """A SignalBatch entry's fields after its columns: the model that computed the signals
    and when, in field order."""
    head, tail = _model_strings(signals.model_version, signals.model_variant,
                                signals.model_sha256, signals.backend)  # fmt: skip
    if computed_at_ns:
        head += _key(9, _I64) + int(computed_at_ns).to_bytes(8, "little", signed=True)
    return head + tail


@functools.lru_cache(maxsize=64)
def _model_strings(version: str, variant: str, sha256: str, backend: str) -> tuple[bytes, bytes]:
    """A SignalBatch's model fields, encoded once per model: the version (field 7), and the
    variant, SHA-256 and backend (10 to 12), which come after the ack and the time."""
    return _strings((7, version)), _strings((10, variant), (11, sha256), (12, backend))


@njit(cache=True, nogil=True, inline="always")
def _put_key(out, i, field, wire_type):
    return _put_varint(out, i, field << 3 | wire_type)


@njit(cache=True, nogil=True)
def _put_bytes(out, i, data):
    for k in range(len(data)):
        out[i + k] = data[k]
    return i + len(data)


@njit(cache=True, nogil=True)
def _put_fixed64(out, i, value):
    x = np.uint64(np.int64(value))
    for k in range(8):
        out[i + k] = (x >> np.uint64(8 * k)) & np.uint64(0xFF)
    return i + 8


@njit(cache=True, nogil=True)
def _put_packed_varints(out, i, field, values):
    """``values`` (integers, negative ones as ten bytes) as a packed field; none if empty."""
    if values.shape[0] == 0:
        return i
    size = 0
    for v in values:
        size += _varint_size(np.uint64(np.int64(v)))
    i = _put_key(out, i, field, 2)
    i = _put_varint(out, i, size)
    for v in values:
        i = _put_varint(out, i, np.uint64(np.int64(v)))
    return i


@njit(cache=True, nogil=True)
def _put_packed_fixed(out, i, field, values):
    """``values`` (a C-contiguous array, native = little-endian) as a packed fixed-width
    field; none if empty."""
    if values.shape[0] == 0:
        return i
    raw = values.view(np.uint8)
    i = _put_key(out, i, field, 2)
    i = _put_varint(out, i, raw.shape[0])
    out[i : i + raw.shape[0]] = raw
    return i + raw.shape[0]


@njit(cache=True, nogil=True)
def _put_uint(out, i, field, value):
    """A varint field; none when 0 (proto3 writes no default)."""
    if value == 0:
        return i
    i = _put_key(out, i, field, 0)
    return _put_varint(out, i, value)


_GAP = 5  # room left for a length that is written after what it measures (< 2**35)


@njit(cache=True, nogil=True)
def _put_length(out, i, start, end):
    """The length of ``out[start:end]`` (written at ``start = i + _GAP``) as a varint at
    ``i``, the content moved back to follow it; returns its new end."""
    at = _put_varint(out, i, end - start)
    for k in range(end - start):  # forwards: it only moves back
        out[at + k] = out[start + k]
    return at + end - start


@njit(cache=True, nogil=True)
def _put_string(out, i, field, data):
    """A bytes or string field (``data``: bytes); none when empty."""
    if len(data) == 0:
        return i
    i = _put_key(out, i, field, 2)
    i = _put_varint(out, i, len(data))
    return _put_bytes(out, i, data)


@njit(cache=True, nogil=True)
def _write_record(out, seq, producer, batch_id, fingerprint, spooled_at_ns, symbol, price, size,
                  ts_ns, reply, features):  # fmt: skip
    """A ``SpoolRecord`` into ``out``, fields in number order; returns the length."""
    i = _put_uint(out, 0, 1, seq)
    i = _put_string(out, i, 2, producer)
    i = _put_uint(out, i, 3, batch_id)
    i = _put_string(out, i, 4, fingerprint)
    if spooled_at_ns:
        i = _put_key(out, i, 5, 1)
        i = _put_fixed64(out, i, spooled_at_ns)
    i = _put_key(out, i, 6, 2)
    start = i + _GAP
    end = _put_packed_varints(out, start, 1, symbol)
    end = _put_packed_fixed(out, end, 2, price)
    end = _put_packed_fixed(out, end, 3, size)
    end = _put_packed_fixed(out, end, 4, ts_ns)
    i = _put_length(out, i, start, end)
    i = _put_key(out, i, 7, 2)
    i = _put_varint(out, i, len(reply))
    i = _put_bytes(out, i, reply)
    return _put_packed_fixed(out, i, 8, features)


def spool_record(seq: int, producer: str, batch_id: int, fingerprint: bytes,
                 spooled_at_ns: int, ticks: Any, reply: bytes, features: np.ndarray) -> bytes:  # fmt: skip
    """A serialized ``SpoolRecord``: ``ticks`` (an `app.synthetic.TickColumns`) as its
    TickBatch, ``reply`` (a serialized SignalBatch) as it is, ``features`` row-major; the
    bytes protobuf's serializer writes for the same record, in one compiled pass."""
    name = producer.encode()
    rows = np.ascontiguousarray(features, np.float64).reshape(-1)
    n = len(ticks.symbol)
    out = np.empty(128 + len(name) + len(fingerprint) + 34 * n + len(reply) + 8 * rows.size,
                   np.uint8)  # a bound  # fmt: skip
    size = _write_record(
        out, np.uint64(seq), name, np.uint64(batch_id), fingerprint, int(spooled_at_ns),
        np.ascontiguousarray(ticks.symbol, np.int32),
        np.ascontiguousarray(ticks.price, np.float64),
        np.ascontiguousarray(ticks.size, np.float64),
        np.ascontiguousarray(ticks.ts_ns, np.int64), reply, rows,
    )  # fmt: skip
    return out[:size].tobytes()


@njit(cache=True, nogil=True)
def _write_ack(out, i, batch_id, reasons, signals):
    """An ``IngestAck`` of the batch's verdicts (``reasons``, 0: accepted) into ``out``."""
    rejected = 0
    index_bytes = 0
    for t in range(reasons.shape[0]):
        if reasons[t] != 0:
            rejected += 1
            index_bytes += _varint_size(t)
    i = _put_uint(out, i, 1, batch_id)
    i = _put_uint(out, i, 2, reasons.shape[0] - rejected)
    i = _put_uint(out, i, 3, rejected)
    if rejected:
        i = _put_key(out, i, 4, 2)
        i = _put_varint(out, i, index_bytes)
        for t in range(reasons.shape[0]):
            if reasons[t] != 0:
                i = _put_varint(out, i, t)
        i = _put_key(out, i, 5, 2)
        i = _put_varint(out, i, rejected)  # one byte per reason (all below 128)
        for t in range(reasons.shape[0]):
            if reasons[t] != 0:
                out[i] = reasons[t]
                i += 1
    return _put_uint(out, i, 6, signals)


@njit(cache=True, nogil=True)
def _write_reply(out, batch_id, reasons, symbol, ts_ns, direction, strength, confidence,
                 computed_at_ns, head, tail, ack_span):  # fmt: skip
    """A ``SignalBatch`` with its ``IngestAck`` into ``out``, fields in number order; the
    ack's content is ``out[ack_span[0]:ack_span[1]]``. Returns the length."""
    i = _put_uint(out, 0, 1, batch_id)
    i = _put_packed_varints(out, i, 2, symbol)
    i = _put_packed_fixed(out, i, 3, ts_ns)
    i = _put_packed_varints(out, i, 4, direction)
    i = _put_packed_fixed(out, i, 5, strength)
    i = _put_packed_fixed(out, i, 6, confidence)
    i = _put_bytes(out, i, head)
    i = _put_key(out, i, 8, 2)
    start = i + _GAP
    end = _write_ack(out, start, batch_id, reasons, symbol.shape[0])
    i = _put_length(out, i, start, end)
    ack_span[0] = i - (end - start)
    ack_span[1] = i
    if computed_at_ns:
        i = _put_key(out, i, 9, 1)
        i = _put_fixed64(out, i, computed_at_ns)
    return _put_bytes(out, i, tail)


def reply(signals: Any, reasons: np.ndarray, batch_id: int,
          computed_at_ns: int) -> tuple[bytes, bytes]:  # fmt: skip
    """The serialized ``SignalBatch`` answering one batch (``signals``: its
    `app.signals.SignalColumns`; ``reasons``: uint8 per tick, 0 accepted) with its
    ``IngestAck``, and that ack's bytes: what protobuf's serializer writes for them, in one
    compiled pass."""
    head, tail = _model_strings(signals.model_version, signals.model_variant,
                                signals.model_sha256, signals.backend)  # fmt: skip
    n, m = len(reasons), len(signals)
    out = np.empty(160 + len(head) + len(tail) + 8 * n + 40 * m, np.uint8)  # a bound
    span = np.empty(2, np.int64)
    size = _write_reply(
        out, np.uint64(batch_id), np.ascontiguousarray(reasons, np.uint8),
        np.ascontiguousarray(signals.symbol, np.int32),
        np.ascontiguousarray(signals.ts_ns, np.int64),
        np.ascontiguousarray(signals.direction, np.int8),
        np.ascontiguousarray(signals.strength, np.float32),
        np.ascontiguousarray(signals.confidence, np.float32), int(computed_at_ns), head, tail,
        span,
    )  # fmt: skip
    data = out[:size].tobytes()
    return data, data[span[0] : span[1]]


@njit(cache=True, nogil=True)
def _varint_at(data, i, end):
    """The varint at ``data[i]`` and where it ends (-1: cut short, or over ten bytes)."""
    value = np.uint64(0)
    shift = np.uint64(0)
    while i < end:
        byte = data[i]
        i += 1
        value |= np.uint64(byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += np.uint64(7)
        if shift >= np.uint64(64):
            break
    return value, -1


@njit(cache=True, nogil=True)
def _not_read():
    return (False, np.empty(0, np.int32), np.empty(0, np.float64), np.empty(0, np.float64),
            np.empty(0, np.int64))  # fmt: skip


@njit(cache=True, nogil=True)
def _read_tick_columns(data):
    """`tick_columns` in one compiled pass: ``(read, symbol, price, size, ts_ns)``, ``read``
    False (`_not_read`) where a column is not one packed field or the bytes are cut short.
    Fields 1 to 4 are the columns; the others (batch_id, producer, unknown ones) are
    skipped by their wire type."""
    end = len(data)
    spans = np.zeros(10, np.int64)  # column f's packed content: data[spans[2f]:spans[2f + 1]]
    seen = 0
    i = 0
    while i < end:
        key, i = _varint_at(data, i, end)
        if i < 0:
            return _not_read()
        field, wire = np.int64(key >> np.uint64(3)), np.int64(key & np.uint64(7))
        column = 1 <= field <= 4
        if column and (wire != _LEN or seen & (1 << field)):
            return _not_read()  # unpacked, or a second piece
        if wire == _LEN:
            length, i = _varint_at(data, i, end)
            if i < 0 or length > np.uint64(end - i):
                return _not_read()
            if column:
                seen |= 1 << field
                spans[2 * field] = i
                spans[2 * field + 1] = i + np.int64(length)
            i += np.int64(length)
        elif wire == 0:
            _, i = _varint_at(data, i, end)
            if i < 0:
                return _not_read()
        elif wire == _I64:
            i += 8
        elif wire == 5:
            i += 4
        else:  # groups (wire types 3, 4) and the invalid 6, 7
            return _not_read()
    if i > end:
        return _not_read()
    for f in range(2, 5):
        if (spans[2 * f + 1] - spans[2 * f]) % 8:
            return _not_read()
    lo, hi = spans[2], spans[3]
    n = 0
    for k in range(lo, hi):  # a varint ends at each byte below 0x80
        n += data[k] < 0x80
    symbol = np.empty(n, np.int32)
    k = lo
    for t in range(n):
        if data[k] < 0x80:  # one byte: 0 to 127
            symbol[t] = data[k]
            k += 1
            continue
        value, k = _varint_at(data, k, hi)
        if k < 0:
            return _not_read()
        low = np.int64(value & np.uint64(0xFFFFFFFF))  # an int32 is the varint's low 32 bits
        symbol[t] = low - (1 << 32) if low >= 1 << 31 else low
    if k != hi:  # the last varint is cut short
        return _not_read()
    raw = np.frombuffer(data, np.uint8)  # the fixed-width columns: copies of their bytes
    return (True, symbol, raw[spans[4] : spans[5]].view(np.float64).copy(),
            raw[spans[6] : spans[7]].view(np.float64).copy(),
            raw[spans[8] : spans[9]].view(np.int64).copy())  # fmt: skip


def tick_columns(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """The ``symbol``, ``price``, ``size`` and ``ts_ns`` columns of a serialized
    ``TickBatch`` (one that protobuf parsed), read straight from its packed fields in one
    compiled pass (`_read_tick_columns`): symbols as int32 (a negative one is a ten-byte,
    sign-extended varint), the others copied as they lie. None when a column is laid out
    otherwise (unpacked, or packed in several pieces, as protobuf also allows): read those
    through the message."""
    read, symbol, price, size, ts_ns = _read_tick_columns(data)
    return (symbol, price, size, ts_ns) if read else None


_MASK64 = (1 << 64) - 1
_KEY_SFIXED64 = struct.Struct("<Bq")  # a key byte and an sfixed64
_FLOAT32 = struct.Struct("<f")
# A Signal's fields 2 to 5 when none is a default: ts_ns, direction (one byte), strength,
# confidence.
_SIGNAL_MIDDLE = struct.Struct("<BqBBBfBf")


@functools.lru_cache(maxsize=65536)
def _symbol_field(symbol: int) -> bytes:
    """A Signal's field 1 (int32 ``symbol``; none when 0)."""
    return b"\x08" + varint(symbol & _MASK64) if symbol else b""


@functools.lru_cache(maxsize=64)
def _signal_strings(version: str, variant: str, sha256: str, backend: str) -> tuple[bytes, bytes]:
    """A Signal's model fields, encoded once per model: the version (field 6), and the
    variant, SHA-256 and backend (8 to 10), which come after ``computed_at_ns`` (7)."""
    return _strings((6, version)), _strings((8, variant), (9, sha256), (10, backend))


def _float32(field: int, value: float) -> bytes:
    """A float field (none when its bits are 0: -0.0 is written, as protobuf does)."""
    try:
        bits = _FLOAT32.pack(value)
    except OverflowError:  # beyond float32: what the C cast gives (inf, or the largest)
        with np.errstate(over="ignore"):
            bits = np.float32(value).tobytes()
    return bytes((field << 3 | 5,)) + bits if bits != b"\0\0\0\0" else b""


def signal_bytes(signal: Any, computed_at_ns: int) -> bytes:
    """A serialized ``Signal`` of one `app.signals.Signal` computed at ``computed_at_ns``:
    the bytes ``Signal(...).SerializeToString()`` writes (fields in number order, defaults
    left out), without building the message."""
    head, tail = _signal_strings(signal.model_version, signal.model_variant,
                                 signal.model_sha256, signal.backend)  # fmt: skip
    ts_ns, direction = signal.ts_ns, signal.direction
    strength, confidence = signal.strength, signal.confidence
    if ts_ns and 0 < direction < 0x80 and strength and confidence and (
        abs(strength) <= 3e38 and abs(confidence) <= 3e38  # all of them written, and as is
    ):  # fmt: skip
        middle = _SIGNAL_MIDDLE.pack(0x11, ts_ns, 0x18, direction, 0x25, strength, 0x2D,
                                     confidence)  # fmt: skip
    else:
        middle = b"".join((
            _KEY_SFIXED64.pack(0x11, ts_ns) if ts_ns else b"",
            b"\x18" + varint(direction & _MASK64) if direction else b"",
            _float32(4, strength), _float32(5, confidence),
        ))  # fmt: skip
    at = _KEY_SFIXED64.pack(0x39, computed_at_ns) if computed_at_ns else b""
    return b"".join((_symbol_field(signal.symbol), middle, head, at, tail))


def _strings(*fields: tuple[int, str]) -> bytes:
    """String fields, leaving out empty ones (proto3 writes no default value)."""
    return b"".join(length_delimited(number, text.encode()) for number, text in fields if text)


class Compressor:
    """One codec, its context reused across batches (zstd contexts are costly to make).
    Both write a standard frame with the content size in its header."""

    def __init__(self, codec: Codec, zstd_level: int = 3) -> None:
        if codec not in CODEC_NUMBERS:
            raise ValueError(f"codec = {codec!r}: must be one of {sorted(CODEC_NUMBERS)}")
        self.codec = codec
        self.number = CODEC_NUMBERS[codec]
        self._zstd = (
            zstandard.ZstdCompressor(level=zstd_level, write_content_size=True)
            if codec == "zstd"
            else None
        )

    def compress(self, data: bytes) -> bytes:
        if self._zstd is not None:
            return self._zstd.compress(data)
        if self.codec == "lz4":
            return lz4.frame.compress(data, store_size=True)
        return data


def attributes(record_type: str, codec: str, records: int, seq_first: int,
               seq_last: int) -> dict[str, str]:  # fmt: skip
    """The Pub/Sub attributes of a batch message (the envelope's fields, as strings)."""
    out = {"schema_version": str(SCHEMA_VERSION), "codec": codec, "record_type": record_type,
           "records": str(records)}  # fmt: skip
    if seq_last:
        out["seq_first"], out["seq_last"] = str(seq_first), str(seq_last)
    return out


def envelope(payload: bytes, compressor: Compressor, record_type: str, records: int,
             seq_first: int = 0, seq_last: int = 0) -> bytes:  # fmt: skip
    """A serialized ``PublishedBatch`` around ``payload`` (joined BatchPayload fragments)."""
    return _pb2().PublishedBatch(
        schema_version=SCHEMA_VERSION, codec=compressor.number, record_type=record_type,
        records=records, uncompressed_bytes=len(payload), seq_first=seq_first,
        seq_last=seq_last, payload=compressor.compress(payload),
    ).SerializeToString()  # fmt: skip


_zstd_decompressor = zstandard.ZstdDecompressor()


@functools.cache
def _pb2() -> Any:
    """The generated messages, loaded once (loading checks the stubs' files each time)."""
    from app.proto import load

    return load()[0]


def decode(message: bytes) -> tuple[Any, Any]:
    """``(PublishedBatch, BatchPayload)`` of a batch message; ValueError on anything else."""
    from google.protobuf.message import DecodeError

    pb2 = _pb2()
    try:
        batch = pb2.PublishedBatch.FromString(message)
    except DecodeError as exc:
        raise ValueError(f"not a PublishedBatch ({len(message)} bytes): {exc}") from exc
    if batch.schema_version != SCHEMA_VERSION or batch.record_type not in RECORD_TYPES:
        raise ValueError(
            f"not a published batch of schema {SCHEMA_VERSION} (schema_version "
            f"{batch.schema_version}, record_type {batch.record_type!r})"
        )
    codec = CODEC_NAMES.get(batch.codec)
    if codec == "zstd":
        raw = _zstd_decompressor.decompress(batch.payload)
    elif codec == "lz4":
        raw = lz4.frame.decompress(batch.payload)
    elif codec == "none":
        raw = batch.payload
    else:
        raise ValueError(f"codec {batch.codec}: not one of {CODEC_NAMES}")
    if len(raw) != batch.uncompressed_bytes:
        raise ValueError(
            f"payload is {len(raw)} bytes, the envelope says {batch.uncompressed_bytes}"
        )
    try:
        content = pb2.BatchPayload.FromString(raw)
    except DecodeError as exc:
        raise ValueError(f"payload is not a BatchPayload: {exc}") from exc
    entries = content.ticks if batch.record_type == TICK_BATCH else content.signals
    rows = sum(len(e.symbol) for e in entries)
    if rows != batch.records or len(content.seq) != len(entries):
        raise ValueError(
            f"{rows} records in {len(entries)} entries with {len(content.seq)} sequence numbers; "
            f"the envelope says {batch.records} records"
        )
    return batch, content
