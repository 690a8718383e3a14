"""Images/s and peak memory of the real training code paths: `python tools/benchmark.py --help`
(spml.experiments.benchmark does the measuring)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from spml.experiments import benchmark
from spml.experiments.benchmark import SECTIONS, BenchmarkSettings, markdown, run_benchmark


def integers(text: str) -> tuple[int, ...]:
    return tuple(int(value) for value in text.split(","))


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=benchmark.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", default="resnet10t", help="timm model name (model.backbone)")
    parser.add_argument("--size", type=int, default=128, help="image size (data.size)")
    parser.add_argument("--batch", type=int, default=32, help="per-process batch (data.batch_size)")
    parser.add_argument("--workers", type=int, default=2, help="loader processes (data.num_workers)")
    parser.add_argument("--bf16", action="store_true", help="train.precision=bf16")
    parser.add_argument("--channels-last", action="store_true", help="model.channels_last=true")
    parser.add_argument("--compile", action="store_true", help="model.compile=true (torch.compile the backbone)")
    parser.add_argument("--steps", type=int, default=8, help="timed training steps per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (more with --compile)")
    parser.add_argument("--iters", type=int, default=5, help="timed batches per augmentation pipeline")
    parser.add_argument("--images", type=int, default=512, help="files written for the loader and step sections")
    parser.add_argument("--source-size", type=int, default=1024, help="side of the written PNG/JPEG files")
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--growth-batches", type=integers, default=(16, 32, 64))
    parser.add_argument("--growth-sizes", type=integers, default=(64, 128, 256))
    parser.add_argument("--growth-steps", type=int, default=2, help="timed steps per growth cell")
    parser.add_argument("--bt-batch", type=int, default=256, help="batch of the batch-transformer share check")
    parser.add_argument("--json", help="write all numbers to this file")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. augment.elastic.kernel_size=31")
    return parser


def main(argv: list[str] | None = None) -> int:
    cli = parser()
    args = cli.parse_intermixed_args(argv)
    flags = {key: value for key, value in vars(args).items() if key != "json"}
    flags["sections"] = tuple(name.strip() for name in args.sections.split(",") if name.strip())
    flags["overrides"] = tuple(args.overrides)
    try:
        settings = BenchmarkSettings(**flags)
    except ValueError as err:
        cli.error(str(err))
    results = run_benchmark(settings)
    print(markdown(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
