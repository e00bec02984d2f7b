"""Bytes per tick on the wire: JSON (the seed plan's encoding) vs protobuf vs protobuf + codec.

Realistic tick batches from the synthetic market (prices on a 0.01 grid, whole lots,
nanosecond timestamps, symbols interleaved) are encoded:

* ``json``: one object per tick, as the seed plan published them (the baseline);
* ``protobuf``: the columnar ``TickBatch`` of the gRPC API (packed repeated fields);
* ``protobuf+zstd`` / ``protobuf+lz4``: what app/publish.py sends: the publisher's frame
  (12-byte header naming the codec, length-prefixed records) compressed.

Two shapes: the mixed-symbol ingest batch (one TickBatch per message, as on the schema
topic) and the per-symbol frames the publisher builds (each symbol's TickBatches of a
latency window under its ordering key). Compression cost is timed per frame.

    .venv/bin/python bench/compression.py [--quick]

The last line is the headline: bytes per tick of JSON and protobuf+zstd and the reduction
(target >= 70% smaller than JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.proto import load
from app.publish import Compressor, decode_batch, encode_batch
from app.synthetic import TickColumns, synthetic_ticks

pb2, _ = load()


def as_json(t: TickColumns) -> bytes:
    return json.dumps(
        [
            {"symbol": int(s), "price": float(p), "size": float(z), "ts_ns": int(ts)}
            for s, p, z, ts in zip(t.symbol, t.price, t.size, t.ts_ns, strict=True)
        ]
    ).encode()


def as_proto(t: TickColumns) -> bytes:
    return pb2.TickBatch(symbol=t.symbol.tolist(), price=t.price.tolist(),
                         size=t.size.tolist(), ts_ns=t.ts_ns.tolist()).SerializeToString()  # fmt: skip


def timed(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    """Median seconds of ``fn()`` over ``repeat`` runs."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller run, under a minute")
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--batch", type=int, default=1000, help="ticks per ingest batch")
    args = parser.parse_args(argv)
    n_batches = 20 if args.quick else 100
    repeat = 20 if args.quick else 100
    per_symbol = n_batches * args.batch // args.symbols
    ticks, _ = synthetic_ticks(args.symbols, per_symbol, seed=11)
    batches = [ticks.slice(i * args.batch, (i + 1) * args.batch) for i in range(n_batches)]
    n_ticks = n_batches * args.batch
    codecs = {name: Compressor(name) for name in ("zstd", "lz4")}  # type: ignore[arg-type]

    print(f"{n_ticks} ticks of {args.symbols} symbols, ingest batches of {args.batch}")
    # 1. Mixed-symbol ingest batches (one message each).
    sizes = {"json": 0, "protobuf": 0, "protobuf+zstd": 0, "protobuf+lz4": 0}
    for b in batches:
        proto = as_proto(b)
        sizes["json"] += len(as_json(b))
        sizes["protobuf"] += len(proto)
        for name, comp in codecs.items():
            frame = encode_batch([proto], comp)
            assert decode_batch(frame)[1] == [proto]
            sizes[f"protobuf+{name}"] += len(frame)
    print("\nmixed-symbol ingest batch (one message per batch)")
    print(f"  {'encoding':<16}{'bytes/tick':>12}{'vs json':>10}")
    for name, total in sizes.items():
        print(f"  {name:<16}{total / n_ticks:>12.2f}{1 - total / sizes['json']:>10.1%}")

    # 2. Per-symbol frames as the publisher builds them: each ingest batch's ticks of a
    # symbol are one TickBatch record; a frame holds a symbol's records of 10 batches.
    window = 10
    frame_sizes = {"json": 0, "protobuf": 0, "protobuf+zstd": 0, "protobuf+lz4": 0}
    frames: list[list[bytes]] = []
    for w in range(0, n_batches, window):
        per_sym: dict[int, list[bytes]] = {}
        per_sym_json: dict[int, int] = {}
        for b in batches[w : w + window]:
            order = np.argsort(b.symbol, kind="stable")
            bounds = np.flatnonzero(np.diff(b.symbol[order])) + 1
            for rows in np.split(order, bounds):
                sub = TickColumns(b.symbol[rows], b.price[rows], b.size[rows], b.ts_ns[rows])
                sym = int(sub.symbol[0])
                per_sym.setdefault(sym, []).append(as_proto(sub))
                per_sym_json[sym] = per_sym_json.get(sym, 0) + len(as_json(sub))
        for sym, records in per_sym.items():
            frames.append(records)
            frame_sizes["json"] += per_sym_json[sym]
            frame_sizes["protobuf"] += sum(len(r) for r in records)
            for name, comp in codecs.items():
                frame_sizes[f"protobuf+{name}"] += len(encode_batch(records, comp))
    print(f"\nper-symbol frames ({len(frames)} frames, a symbol's records of {window} batches)")
    print(f"  {'encoding':<16}{'bytes/tick':>12}{'vs json':>10}")
    for name, total in frame_sizes.items():
        print(f"  {name:<16}{total / n_ticks:>12.2f}{1 - total / frame_sizes['json']:>10.1%}")

    # 3. Cost per frame (median over frames of a typical size) and per ingest batch.
    sample_frames = frames[: min(len(frames), 50)]
    proto_batch = as_proto(batches[0])
    print("\ncompression cost (median)")
    print(f"  {'codec':<8}{'per ingest batch':>18}{'per symbol frame':>18}{'decode batch':>14}")
    for name, comp in codecs.items():
        enc_batch = timed(lambda comp=comp: encode_batch([proto_batch], comp), repeat)
        enc_frames = timed(lambda comp=comp: [encode_batch(f, comp) for f in sample_frames], repeat)
        payload = encode_batch([proto_batch], comp)
        dec = timed(lambda payload=payload: decode_batch(payload), repeat)
        print(f"  {name:<8}{enc_batch * 1e6:>15.1f} µs{enc_frames / len(sample_frames) * 1e6:>15.1f} µs"
              f"{dec * 1e6:>11.1f} µs")  # fmt: skip
    json_bpt = sizes["json"] / n_ticks
    zstd_bpt = sizes["protobuf+zstd"] / n_ticks
    frame_zstd_bpt = frame_sizes["protobuf+zstd"] / n_ticks
    reduction = 1 - sizes["protobuf+zstd"] / sizes["json"]
    print(
        f"\nheadline: json {json_bpt:.1f} B/tick, protobuf+zstd {zstd_bpt:.1f} B/tick "
        f"(per-symbol frames {frame_zstd_bpt:.1f}); {reduction:.1%} smaller than json "
        f"(ratio {json_bpt / zstd_bpt:.1f}x; target >= 70%: {'met' if reduction >= 0.7 else 'MISSED'})"
    )
    return 0 if reduction >= 0.7 else 1


if __name__ == "__main__":
    sys.exit(main())
