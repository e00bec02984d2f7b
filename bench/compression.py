"""Bytes per tick on the wire: JSON (the seed plan's encoding) vs protobuf vs published batches.

Realistic tick batches from the synthetic market (prices on a 0.01 grid, whole lots,
nanosecond timestamps, symbols interleaved) are encoded:

* ``json``: one object per tick, as the seed plan published them (the baseline);
* ``protobuf``: the columnar ``TickBatch`` of the gRPC API (packed repeated fields);
* ``published+zstd`` / ``published+lz4``: what app/publish.py sends on a batch topic: a
  ``PublishedBatch`` envelope around a zstd or LZ4 frame of ``TickBatch`` entries
  (`app.batch_format`), readable with stock libraries.

Two shapes: the mixed-symbol ingest batch (one batch per message) and the messages the
publisher builds: each ordering shard's entries of a latency window (10 ingest batches)
under the shard's key; the same window keyed per symbol (the keying before shards) shows
what bounded keys save. Encoding (columns to entries to a compressed envelope) and
decoding are timed per ingest batch.

    .venv/bin/python bench/compression.py [--quick]

The last line is the headline: bytes per tick of JSON and of the published batch (zstd)
and the reduction (target >= 70% smaller than JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.batch_format import TICK_BATCH, Compressor, decode, envelope, tick_batch, tick_entries
from app.settings.shards import DEFAULT_SHARDS
from app.shards import ShardTable
from app.synthetic import TickColumns, synthetic_ticks

CODECS = ("zstd", "lz4")


def as_json(t: TickColumns) -> bytes:
    return json.dumps(
        [
            {"symbol": int(s), "price": float(p), "size": float(z), "ts_ns": int(ts)}
            for s, p, z, ts in zip(t.symbol, t.price, t.size, t.ts_ns, strict=True)
        ]
    ).encode()


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds of ``fn()`` over ``repeat`` runs."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def messages(batches: list[TickColumns], groups_of: Callable[[np.ndarray], np.ndarray],
             window: int, compressor: Compressor) -> list[bytes]:  # fmt: skip
    """The batch-topic messages of ``batches`` as the publisher builds them: each group's
    entries of ``window`` consecutive batches joined into one message."""
    out: list[bytes] = []
    for w in range(0, len(batches), window):
        pending: dict[int, list[bytes]] = {}
        rows: dict[int, int] = {}
        for seq, b in enumerate(batches[w : w + window], start=w + 1):
            for group, entry, n, _ in tick_entries(groups_of(b.symbol), seq, b.symbol, b.price,
                                                b.size, b.ts_ns):  # fmt: skip
                pending.setdefault(group, []).append(entry)
                rows[group] = rows.get(group, 0) + n
        for group, entries in pending.items():
            out.append(envelope(b"".join(entries), compressor, TICK_BATCH, rows[group]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller run, under a minute")
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--batch", type=int, default=1000, help="ticks per ingest batch")
    parser.add_argument("--shards", type=int, default=DEFAULT_SHARDS)
    args = parser.parse_args(argv)
    n_batches = 20 if args.quick else 100
    repeat = 20 if args.quick else 100
    per_symbol = n_batches * args.batch // args.symbols
    ticks, _ = synthetic_ticks(args.symbols, per_symbol, seed=11)
    batches = [ticks.slice(i * args.batch, (i + 1) * args.batch) for i in range(n_batches)]
    n_ticks = n_batches * args.batch
    compressors = {name: Compressor(name) for name in CODECS}  # type: ignore[arg-type]
    table = ShardTable(args.symbols, args.shards)

    print(f"{n_ticks} ticks of {args.symbols} symbols, ingest batches of {args.batch}, "
          f"{args.shards} ordering shards")  # fmt: skip
    # 1. Mixed-symbol ingest batches, one message each.
    single = lambda s: np.zeros(s.shape[0], np.int64)  # noqa: E731 - one group: the whole batch
    sizes = {"json": 0, "protobuf": 0}
    for b in batches:
        sizes["json"] += len(as_json(b))
        sizes["protobuf"] += len(tick_batch(b.symbol, b.price, b.size, b.ts_ns))
    for name, comp in compressors.items():
        sent = messages(batches, single, 1, comp)
        assert sum(decode(m)[0].records for m in sent) == n_ticks
        sizes[f"published+{name}"] = sum(len(m) for m in sent)
    print("\nmixed-symbol ingest batch (one message per batch)")
    print(f"  {'encoding':<16}{'bytes/tick':>12}{'vs json':>10}")
    for name, total in sizes.items():
        print(f"  {name:<16}{total / n_ticks:>12.2f}{1 - total / sizes['json']:>10.1%}")

    # 2. The publisher's messages over a latency window of 10 ingest batches: per shard (what
    # it sends) and per symbol (the keying before shards), with their message counts.
    window = 10
    keyed: dict[str, dict[str, int]] = {}
    for keying, groups_of in (("per shard", table.of), ("per symbol", lambda s: s)):
        for name, comp in compressors.items():
            sent = messages(batches, groups_of, window, comp)
            keyed.setdefault(keying, {"messages": len(sent)})[name] = sum(len(m) for m in sent)
    print(f"\npublished messages over a window of {window} batches")
    print(f"  {'keying':<12}{'messages':>10}" + "".join(f"{c + ' B/tick':>14}{'vs json':>9}"
                                                          for c in CODECS))  # fmt: skip
    for keying, row in keyed.items():
        cells = "".join(f"{row[c] / n_ticks:>14.2f}{1 - row[c] / sizes['json']:>9.1%}"
                        for c in CODECS)  # fmt: skip
        print(f"  {keying:<12}{row['messages']:>10}{cells}")

    # 3. Cost (median): one ingest batch from columns to its per-shard entries and one message,
    # and decoding that message back (envelope, frame, entries).
    b = batches[0]
    print("\ncost per ingest batch (median)")
    print(f"  {'codec':<8}{'encode':>12}{'decode':>12}")
    for name, comp in compressors.items():

        def encode(comp: Compressor = comp) -> bytes:
            entries = tick_entries(table.of(b.symbol), 1, b.symbol, b.price, b.size, b.ts_ns)
            return envelope(b"".join(e for _, e, _, _ in entries), comp, TICK_BATCH, len(b))

        message = encode()
        enc, dec = timed(encode, repeat), timed(lambda m=message: decode(m), repeat)
        print(f"  {name:<8}{enc * 1e6:>9.1f} µs{dec * 1e6:>9.1f} µs")

    json_bpt = sizes["json"] / n_ticks
    zstd_bpt = sizes["published+zstd"] / n_ticks
    shard_zstd_bpt = keyed["per shard"]["zstd"] / n_ticks
    reduction = 1 - sizes["published+zstd"] / sizes["json"]
    print(
        f"\nheadline: json {json_bpt:.1f} B/tick, published+zstd {zstd_bpt:.1f} B/tick "
        f"(per-shard messages {shard_zstd_bpt:.1f}); {reduction:.1%} smaller than json "
        f"(ratio {json_bpt / zstd_bpt:.1f}x; target >= 70%: {'met' if reduction >= 0.7 else 'MISSED'})"
    )
    return 0 if reduction >= 0.7 else 1


if __name__ == "__main__":
    sys.exit(main())
