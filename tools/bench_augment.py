"""Images/s of the weak and strong (with and without RED) augmentation pipelines on the CPU.

    python tools/bench_augment.py [--batch 64] [--size 256] [--iters 5] [key=value ...]

Extra key=value arguments override augment.* fields (e.g. elastic.kernel_size=31). No assertions:
it prints one line per pipeline, plus RED alone (p=1) in kornia's and spml's implementation.
"""
from __future__ import annotations

import argparse
import time

import kornia.augmentation as K
import torch

from spml.augment import build_strong, build_weak
from spml.augment.elastic import RandomElasticTransform
from spml.config import load_config


def images_per_second(pipeline: torch.nn.Module, images: torch.Tensor, iters: int) -> float:
    pipeline(images)  # warm-up
    start = time.perf_counter()
    for _ in range(iters):
        pipeline(images)
    return iters * images.shape[0] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("overrides", nargs="*", help="augment fields, e.g. elastic.kernel_size=31")
    args = parser.parse_args()
    config = load_config([], [f"augment.{item}" for item in args.overrides]).augment
    torch.manual_seed(0)
    images = torch.rand(args.batch, 1, args.size, args.size)
    print(f"batch {args.batch}x(1,{args.size},{args.size}) on CPU, {torch.get_num_threads()} threads, "
          f"elastic kernel {config.elastic.kernel_size} p {config.elastic.p}")
    pipelines = {"weak": build_weak(config), "strong (no RED)": build_strong(config, red=False),
                 "strong + RED": build_strong(config, red=True)}
    elastic = config.elastic
    red_args = {"kernel_size": (elastic.kernel_size,) * 2, "sigma": (elastic.sigma,) * 2,
                "alpha": (elastic.alpha,) * 2, "p": 1.0}
    pipelines["RED alone, kornia"] = K.RandomElasticTransform(**red_args)
    pipelines["RED alone, spml"] = RandomElasticTransform(**red_args)
    for name, pipeline in pipelines.items():
        print(f"{name:18s} {images_per_second(pipeline, images, args.iters):8.1f} images/s")


if __name__ == "__main__":
    main()
