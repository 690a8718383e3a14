"""Reproduce the validation-protocol table of docs/results.md (issue 24):

    python tools/calibration_study.py --out runs/calibration_study --seeds 0 1 2 \
        --scheme single_positive --scheme frequent_first
    python tools/results_doc.py --collect calibration_protocols=runs/calibration_study

Per seed and masking scheme, one training of configs/quickstart.yaml with the EM loss alone (seed = train.seed,
data.split_seed and data.synthetic.seed, as in the ablation grids) records every epoch's val and test
probabilities into <out>/<scheme>/seed<N>/epochs.npz (a record that exists is reused); then the three validation
protocols (spml.experiments.calibration_study) are replayed on every record and <out>/results.csv (one row per
scheme, seed and protocol) and results.json (command, seeds) are written. Extra dotted overrides go to every
training.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from spml.cli import run_cli

STUDY_OVERRIDES = (
    "spml.objective=loss",
    "loss.name=em",
    "data.mask_no_positive=keep",
    "eval.bootstrap=0",
    "eval.tta=false",
    "eval.heatmaps=0",
    "eval.pointing_game=false",
    "eval.report=false",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/calibration_study")
    parser.add_argument("--config", action="append", default=[], help="config files (default configs/quickstart.yaml)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--scheme", action="append", default=[], help="masking scheme(s) (default single_positive)")
    parser.add_argument("--train-only", action="store_true", help="record the trainings, do not evaluate")
    parser.add_argument("--machine", default="", help="the machine, in words, for results.json")
    parser.add_argument("overrides", nargs="*", help="dotted overrides for every training")
    args = parser.parse_intermixed_args(argv)

    def study() -> int:
        from spml.config import load_config
        from spml.experiments.calibration_study import RECORD, record_training

        configs = args.config or ["configs/quickstart.yaml"]
        schemes = args.scheme or ["single_positive"]
        out = Path(args.out)
        minutes = 0.0
        for scheme in schemes:
            for seed in args.seeds:
                run = out / scheme / f"seed{seed}"
                if (run / RECORD).exists():
                    continue
                config = load_config(
                    configs,
                    (
                        *STUDY_OVERRIDES,
                        f"data.mask_scheme={scheme}",
                        f"train.seed={seed}",
                        f"data.split_seed={seed}",
                        f"data.synthetic.seed={seed}",
                        f"train.out={run}",
                        *args.overrides,
                    ),
                    mode="spml",
                )
                start = time.perf_counter()
                print(f"recorded {record_training(config, run)}", flush=True)
                minutes += (time.perf_counter() - start) / 60
        if args.train_only:
            return 0
        from spml.experiments.calibration_study import evaluate_study

        frame = evaluate_study(out, schemes, args.seeds)
        frame.to_csv(out / "results.csv", index=False)
        metrics = ["test_mAP", "ece_raw", "ece_calibrated", "prevalence_gap", "sensitivity", "specificity", "epoch"]
        views = [
            {
                "title": f"{scheme} masking, eval.calibration=platt",
                "where": {"scheme": scheme, "calibration": "platt"},
                "rows": ["protocol"],
                "metrics": metrics,
            }
            for scheme in schemes
        ]
        views += [
            {
                "title": f"{scheme} masking: test ECE after each eval.calibration",
                "where": {"scheme": scheme},
                "rows": ["protocol", "calibration"],
                "metrics": ["ece_calibrated", "brier_calibrated", "prevalence_gap", "sensitivity", "specificity"],
            }
            for scheme in schemes
        ]
        meta = {
            "command": "python tools/calibration_study.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
            "seeds": args.seeds,
            "schemes": schemes,
            "configs": configs,
            "machine": args.machine,
            "overrides": [*STUDY_OVERRIDES, *args.overrides],
            "views": views,
        }
        (out / "results.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        print(frame.to_string(index=False))
        print(f"wrote {out / 'results.csv'}")
        return 0

    return run_cli(study, parser)


if __name__ == "__main__":
    sys.exit(main())
