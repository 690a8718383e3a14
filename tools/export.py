"""Export a run's trained classifier alone: `python tools/export.py RUN [--checkpoint latest|best] [--out DIR]`.

Writes DIR (default RUN/export) with model.safetensors (weights; the evaluation EMA's when the run kept one,
which is what its evaluation scored) and model.json (backbone, head and its arguments, classes, input size,
normalisation, TTA views, the image decoding settings). With --torchscript also model.torchscript.pt (uint8
(B, 1, S, S) -> logits (B, C), no TTA). Load it with `spml.load_model(DIR)` (an nn.Module ready for inference)
or `torch.jit.load`; tools/predict.py and tools/evaluate.py read run folders through the same loader.
"""

from __future__ import annotations

import argparse
import sys

from spml.cli import run_cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="run folder (holds config.yaml, data_stats.json and checkpoints/)")
    parser.add_argument("--checkpoint", default="latest", choices=["latest", "best"])
    parser.add_argument("--out", help="output folder (default: <run>/export)")
    parser.add_argument("--torchscript", action="store_true", help="also write a traced TorchScript model")
    args = parser.parse_args(argv)

    def export() -> int:
        from spml.factories import export_run
        from spml.models.artifact import SPEC

        out = export_run(args.run, args.out, args.checkpoint, args.torchscript)
        print(
            f"exported {args.run} ({args.checkpoint}) -> {out} ({SPEC}, model.safetensors"
            f"{', model.torchscript.pt' if args.torchscript else ''})"
        )
        return 0

    return run_cli(export, parser)


if __name__ == "__main__":
    sys.exit(main())
