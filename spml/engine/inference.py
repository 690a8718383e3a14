"""Load a finished (or interrupted) run for evaluation and prediction."""
from __future__ import annotations

import json
from pathlib import Path

from spml.config import Config, load_config
from spml.engine import checkpoint as ckpt
from spml.objectives import DataStats, Objective, build_objective


def load_run(run_dir: str | Path, which: str = "latest",
             overrides: tuple[str, ...] = ()) -> tuple[Config, DataStats, Objective]:
    """(config, training data stats incl. classes, objective with the `which` checkpoint's weights, in eval mode).

    which: latest | best. Needs only the run folder, not the dataset: the checkpoint holds every weight, so
    the initial-weight files the run started from (model.pretrained, model.prototypes) are not read again.
    """
    run_dir = Path(run_dir)
    for name in ("config.yaml", "data_stats.json"):
        if not (run_dir / name).exists():
            raise FileNotFoundError(f"{run_dir} is not a run folder (no {name})")
    config = load_config([run_dir / "config.yaml"], ("model.pretrained=", "model.prototypes=", *overrides))
    stats = DataStats.from_json(json.loads((run_dir / "data_stats.json").read_text(encoding="utf-8")))
    objective = build_objective(config, stats)
    root = run_dir / "checkpoints"
    if not (root / f"{which}.json").exists():
        raise FileNotFoundError(f"{root / (which + '.json')} not found (checkpoints: latest or best)")
    state, _ = ckpt.load_state(ckpt.read_pointer(root, which))
    objective.load_state_dict(state["objective"])
    return config, stats, objective.eval()
