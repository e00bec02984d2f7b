"""Payload benchmark: the same tick and signal batches as protobuf (columnar) vs JSON.

JSON baselines carry the same information: row objects (the usual REST shape) and
columnar arrays; every number is written in its shortest round-tripping form for its
wire type (float64 prices and sizes, float32 strength and confidence). Target: protobuf
>= 60% smaller than row JSON. Sizes as a zstd frame (the publisher's codec,
`app.batch_format.Compressor`) are shown too. Last line: headline.

    .venv/bin/python bench/payload.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.batch_format import Compressor
from app.proto import load
from app.signals import DIRECTION_DOWN, DIRECTION_FLAT, DIRECTION_UP
from app.synthetic import synthetic_ticks

pb2, _ = load()
DIRECTIONS = {DIRECTION_DOWN: "DOWN", DIRECTION_FLAT: "FLAT", DIRECTION_UP: "UP"}


def f32(x: float) -> float:
    """The shortest decimal that reads back as the same float32 (what a JSON API would send)."""
    return float(np.format_float_positional(np.float32(x), unique=True, trim="-"))


def tick_payloads(n: int) -> dict[str, bytes]:
    ticks, _ = synthetic_ticks(200, n // 200, seed=11)
    sym, price, size, ts = (ticks.symbol.tolist(), ticks.price.tolist(), ticks.size.tolist(),
                            ticks.ts_ns.tolist())  # fmt: skip
    proto = pb2.TickBatch(symbol=sym, price=price, size=size, ts_ns=ts, batch_id=1)
    rows = [{"symbol": a, "price": b, "size": c, "ts_ns": d}
            for a, b, c, d in zip(sym, price, size, ts, strict=True)]  # fmt: skip
    cols = {"symbol": sym, "price": price, "size": size, "ts_ns": ts, "batch_id": 1}
    return {
        "protobuf": proto.SerializeToString(),
        "JSON rows": json.dumps({"batch_id": 1, "ticks": rows}, separators=(",", ":")).encode(),
        "JSON columns": json.dumps(cols, separators=(",", ":")).encode(),
    }


def signal_payloads(n: int) -> dict[str, bytes]:
    rng = np.random.default_rng(12)
    sym = rng.permutation(n).astype(np.int32)
    ts = (1_700_000_000_000_000_000 + np.cumsum(rng.integers(1, 10**6, n))).tolist()
    direction = rng.choice([DIRECTION_DOWN, DIRECTION_FLAT, DIRECTION_UP], n).tolist()
    p = rng.dirichlet([2, 2, 2], n).astype(np.float32)
    strength = (p[:, 2] - p[:, 0]).tolist()
    confidence = p.max(axis=1).tolist()
    version = "signal_mlp/1"
    proto = pb2.SignalBatch(batch_id=1, symbol=sym.tolist(), ts_ns=ts, direction=direction,
                            strength=strength, confidence=confidence, model_version=version)  # fmt: skip
    rows = [
        {"symbol": int(s), "ts_ns": t, "direction": DIRECTIONS[d], "strength": f32(st),
         "confidence": f32(c), "model_version": version}
        for s, t, d, st, c in zip(sym, ts, direction, strength, confidence, strict=True)
    ]  # fmt: skip
    cols = {"batch_id": 1, "symbol": sym.tolist(), "ts_ns": ts,
            "direction": [DIRECTIONS[d] for d in direction],
            "strength": [f32(x) for x in strength], "confidence": [f32(x) for x in confidence],
            "model_version": version}  # fmt: skip
    return {
        "protobuf": proto.SerializeToString(),
        "JSON rows": json.dumps({"batch_id": 1, "signals": rows}, separators=(",", ":")).encode(),
        "JSON columns": json.dumps(cols, separators=(",", ":")).encode(),
    }


def codec_us(kind: str, payloads: dict[str, bytes], repeats: int) -> dict[str, float]:
    """Median decode time of each payload (parse back to Python objects)."""
    msg = pb2.TickBatch if kind == "ticks" else pb2.SignalBatch
    out = {}
    for name, data in payloads.items():

        def decode(d: bytes = data, proto: bool = name == "protobuf") -> object:
            return msg.FromString(d) if proto else json.loads(d)

        runs = []
        for _ in range(repeats):
            t = time.perf_counter()
            decode()
            runs.append((time.perf_counter() - t) * 1e6)
        out[name] = statistics.median(runs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--batch", type=int, default=1000, help="ticks/signals per batch")
    args = parser.parse_args()
    repeats = 20 if args.quick else 100
    zstd = Compressor("zstd")
    headline = {}
    for kind, payloads in (
        ("ticks", tick_payloads(args.batch)),
        ("signals", signal_payloads(args.batch)),
    ):
        proto = len(payloads["protobuf"])
        decode = codec_us(kind, payloads, repeats)
        print(f"{args.batch:,} {kind} per batch:")
        for name, data in payloads.items():
            print(f"  {name:<13} {len(data):>8,} bytes ({len(data) / args.batch:5.1f} B each)  "
                  f"zstd {len(zstd.compress(data)):>7,} bytes  decode {decode[name]:8.0f} us"
                  + ("" if name == "protobuf" else f"  protobuf is {1 - proto / len(data):.0%} smaller"))  # fmt: skip
        headline[kind] = (proto, len(payloads["JSON rows"]), len(payloads["JSON columns"]))
    t, s = headline["ticks"], headline["signals"]
    print(
        f"payload: ticks protobuf {t[0]:,} B vs JSON {t[1]:,} B ({1 - t[0] / t[1]:.0%} smaller; "
        f"{1 - t[0] / t[2]:.0%} vs columnar JSON); signals {s[0]:,} B vs {s[1]:,} B "
        f"({1 - s[0] / s[1]:.0%} smaller; {1 - s[0] / s[2]:.0%} vs columnar); target >= 60%"
    )


if __name__ == "__main__":
    main()
