"""``python -m app.model build``: train, export, quantise and lay out the model repository."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from app.config import format_validation_error
from app.model import DEFAULT_MODEL_DIR


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.model")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="train and export fp32, int8 and 4-bit ONNX models")
    build.add_argument("--out", type=Path, default=Path(DEFAULT_MODEL_DIR))
    build.add_argument("--name", default="signal_mlp")
    build.add_argument("--version", type=int, default=1)
    build.add_argument("--seed", type=int, default=1)
    build.add_argument("--train-symbols", type=int, default=48)
    build.add_argument("--ticks-per-symbol", type=int, default=2500)
    build.add_argument("--epochs", type=int, default=6)
    build.add_argument("--triton-variant", default="int4", help="fp32, int8 or int4")
    build.add_argument("--max-batch-size", type=int, default=256)
    build.add_argument("--max-queue-delay-us", type=int, default=500)
    build.add_argument("--instance-kind", default="KIND_CPU", help="KIND_CPU or KIND_GPU")
    build.add_argument("--instance-count", type=int, default=1)
    args = parser.parse_args(argv)

    from app.model.build import BuildOptions, BuildTargetError, build_model

    try:
        options = BuildOptions.model_validate(
            {
                "name": args.name,
                "version": args.version,
                "seed": args.seed,
                "train_symbols": args.train_symbols,
                "ticks_per_symbol": args.ticks_per_symbol,
                "epochs": args.epochs,
                "triton_variant": args.triton_variant,
                "triton": {
                    "name": args.name,
                    "max_batch_size": args.max_batch_size,
                    "max_queue_delay_us": args.max_queue_delay_us,
                    "instance_groups": [{"kind": args.instance_kind, "count": args.instance_count}],
                },
            }
        )
    except ValidationError as exc:
        print(format_validation_error(exc, "build options"), file=sys.stderr)
        return 2
    try:
        build_model(args.out, options)
    except BuildTargetError as exc:
        print(f"model build missed its targets: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
