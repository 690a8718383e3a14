"""spml.factories turns a Config into components: every registered loss, head, objective and MPC strategy is built
from the config, errors name the config key (tests/test_layering.py: nothing outside spml.factories reads the schema)."""

import pytest
import torch

from spml.config import load_config
from spml.factories import DataStats, build_objective, build_optimizer, build_scheduler, objective_loss
from spml.losses import LOSSES, SPML_LOSSES
from spml.objectives import (
    BASE_TERMS,
    CONSISTENCY,
    TARGETS,
    THRESHOLDS,
    MPCObjective,
    SinglePositiveObjective,
    SupervisedObjective,
)

STATS = DataStats(
    classes=("A", "B", "C"),
    num_images=12,
    pos_counts=torch.tensor([3.0, 2.0, 1.0]),
    class_prior=torch.tensor([0.4, 0.3, 0.2]),
    expected_positives=1.2,
)
TINY = [
    "model.backbone=test_efficientnet",
    "augment.elastic.kernel_size=7",
    "spml.mpc.bt_dim_feedforward=16",
    "spml.mpc.memory_size=4",
]


def config(mode: str, *overrides: str):
    return load_config([], [*TINY, *overrides], mode=mode)


@pytest.mark.parametrize(
    "mode, name", [("supervised", n) for n in LOSSES.names()] + [("spml", n) for n in SPML_LOSSES.names()]
)
def test_every_registered_loss_is_built_from_loss_name(mode, name):
    loss = objective_loss(config(mode, f"loss.name={name}"), STATS)
    registry = LOSSES if mode == "supervised" else SPML_LOSSES
    assert isinstance(loss, registry.get(name))


def test_a_loss_of_the_other_mode_and_bad_params_name_the_key():
    with pytest.raises(KeyError, match=r"loss.name='em' is a single-positive loss \(spml mode\); in supervised mode"):
        objective_loss(config("supervised", "loss.name=em"), STATS)
    with pytest.raises(KeyError, match="loss.name: unknown single-positive loss 'nope'"):
        objective_loss(config("spml", "loss.name=nope"), STATS)
    with pytest.raises(ValueError, match=r"loss.name=focal: loss 'focal': unknown parameter\(s\) \['gama'\]"):
        objective_loss(config("supervised", "loss.name=focal", "loss.params={gama: 2}"), STATS)
    assert objective_loss(config("spml", "loss.name=epr"), STATS).expected_positives == 1.2  # dataset facts offered


@pytest.mark.parametrize(
    "mode, overrides, kind",
    [
        ("supervised", [], SupervisedObjective),
        ("spml", ["spml.objective=loss", "loss.name=role"], SinglePositiveObjective),
        ("spml", [], MPCObjective),
    ],
)
def test_each_objective_is_built_with_the_parts_the_config_names(mode, overrides, kind):
    objective = build_objective(config(mode, *overrides), STATS)
    assert (
        type(objective) is kind
        and objective.classifier.backbone.model.default_cfg["architecture"] == "test_efficientnet"
    )
    if kind is not MPCObjective:
        return
    assert objective.strong is not None and objective.perturb is not None and objective.batch_transformer is not None
    assert type(objective.base) is SPML_LOSSES.get("em") and objective.teacher is None


@pytest.mark.parametrize(
    "key, registry",
    [("threshold", THRESHOLDS), ("targets", TARGETS), ("consistency", CONSISTENCY), ("base_after_warmup", BASE_TERMS)],
)
def test_every_mpc_strategy_is_built_from_its_key(key, registry):
    attribute = {"threshold": "thresholds", "base_after_warmup": "base_term"}.get(key, key)
    for name in registry.names():
        objective = build_objective(config("spml", f"spml.mpc.{key}={name}"), STATS)
        assert type(getattr(objective, attribute)) is registry.get(name)


def test_mpc_switches_and_values_reach_the_objective():
    objective = build_objective(
        config(
            "spml",
            "spml.mpc.ipc_weight=0",
            "spml.mpc.fpc_weight=0",
            "spml.mpc.btc_weight=0.3",
            "spml.mpc.teacher=ema",
            "spml.mpc.teacher_decay=0.9",
            "spml.mpc.threshold=global",
            "spml.mpc.tau_pos=0.8",
            "spml.mpc.warmup_epochs=2",
        ),
        STATS,
    )
    assert objective.strong is None and objective.perturb is None and objective.btc_weight == 0.3
    assert objective.teacher.decay == 0.9 and objective.thresholds() == (0.8, 0.1) and objective.warmup_epochs == 2
    no_red = build_objective(config("spml", "spml.mpc.red=false"), STATS)
    assert not any("Elastic" in type(op).__name__ for op in no_red.strong.ops)
    with pytest.raises(ValueError, match="spml.mpc.teacher_decay: EMA decay must lie in"):
        build_objective(config("spml", "spml.mpc.teacher=ema", "spml.mpc.teacher_decay=1.5"), STATS)


def test_optimizer_and_scheduler_errors_name_the_key():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="optim: optimizer 'nonsense'"):
        build_optimizer(model, config("supervised", "optim.name=nonsense").optim)
    optimizer = build_optimizer(model, config("supervised").optim)
    with pytest.raises(ValueError, match="optim.scheduler: scheduler 'xyz'"):
        build_scheduler(optimizer, config("supervised", "optim.scheduler=xyz").optim, 2, 3)
