"""Quantisation benchmark: size, CPU latency and agreement of the fp32, int8 and 4-bit models.

Latency is ONNX Runtime on one CPU thread: p50 of a one-row call and the per-row cost of
256-row batches, medians of repeated runs with the variants interleaved. Agreement is the
share of held-out samples whose predicted class matches fp32. Last line: headline.

    .venv/bin/python bench/quantize.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.model.build import VARIANTS, ensure_model
from app.model.contract import INPUT_NAME, OUTPUT_NAME
from app.model.train import accuracy, make_dataset


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--model-dir", type=Path, default=Path("artifacts/model"))
    args = parser.parse_args()
    artifacts = ensure_model(args.model_dir)
    opts = artifacts.manifest["training"]
    heldout = make_dataset(
        opts["heldout_symbols"], opts["ticks_per_symbol"], seed=opts["seed"] + 1000
    )
    sessions = {v: session(artifacts.path(v)) for v in VARIANTS}
    probs = {v: s.run([OUTPUT_NAME], {INPUT_NAME: heldout.x})[0] for v, s in sessions.items()}
    fp32_class = probs["fp32"].argmax(axis=1)

    n_single, n_batch, rounds = (2000, 200, 5) if args.quick else (10000, 1000, 7)
    one = heldout.x[:1]
    batch = heldout.x[:256]
    single: dict[str, list[float]] = {v: [] for v in VARIANTS}
    batched: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(rounds):
        for v, s in sessions.items():
            samples = np.empty(n_single)
            for i in range(n_single):
                t = time.perf_counter_ns()
                s.run([OUTPUT_NAME], {INPUT_NAME: one})
                samples[i] = time.perf_counter_ns() - t
            single[v].append(float(np.percentile(samples, 50)) / 1e3)
            t = time.perf_counter()
            for _ in range(n_batch):
                s.run([OUTPUT_NAME], {INPUT_NAME: batch})
            batched[v].append((time.perf_counter() - t) / (n_batch * 256) * 1e9)

    fp32_bytes = artifacts.path("fp32").stat().st_size
    print(f"held-out: {len(heldout):,} samples; ONNX Runtime {ort.__version__}, 1 thread; "
          f"medians of {rounds} rounds")  # fmt: skip
    print(f"  {'variant':<8}{'bytes':>9}{'vs fp32':>9}{'1-row p50':>12}{'per row @256':>14}"
          f"{'accuracy':>10}{'agreement':>11}")  # fmt: skip
    summary = {}
    for v in VARIANTS:
        size = artifacts.path(v).stat().st_size
        agree = float((probs[v].argmax(axis=1) == fp32_class).mean())
        p50 = statistics.median(single[v])
        per_row = statistics.median(batched[v])
        summary[v] = (size, agree, p50, per_row)
        print(f"  {v:<8}{size:>9,}{1 - size / fp32_bytes:>8.1%} {p50:>9.1f} us{per_row:>11.0f} ns"
              f"{accuracy(probs[v], heldout.y):>10.2%}{agree:>11.2%}")  # fmt: skip
    f, i8, i4 = summary["fp32"], summary["int8"], summary["int4"]
    print(
        f"quantize: int4 {i4[0]:,} B ({1 - i4[0] / f[0]:.1%} smaller than fp32 {f[0]:,} B, "
        f"target >= 75%), agreement {i4[1]:.2%} (target >= 99%); int8 {1 - i8[0] / f[0]:.1%} "
        f"smaller, {i8[1]:.2%}; 1-row p50 fp32 {f[2]:.1f} / int8 {i8[2]:.1f} / int4 {i4[2]:.1f} us"
    )


if __name__ == "__main__":
    main()
