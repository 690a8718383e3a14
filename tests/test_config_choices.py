"""Every fixed-choice config field is a Literal the loader checks in one place; keys of earlier versions fail
naming their replacement, and a run folder's config written by an earlier spml loads as the same run."""

import dataclasses
import shutil
import typing

import pytest

from spml.config import Config, ConfigError, load_config
from spml.config.legacy import REMOVED
from spml.data.readers import READERS
from spml.data.splits import SPLIT_SCHEMES
from spml.evaluation.calibration import RULES
from spml.evaluation.calibrators import METHODS
from spml.evaluation.heatmaps import HEATMAP_METHODS
from spml.factories import check_choices
from spml.models import HEADS
from spml.objectives import BASE_TERMS, CONSISTENCY, OBJECTIVES, TARGETS, THRESHOLDS
from tests.conftest import REPO

OLD_RUN_CONFIG = REPO / "tests" / "fixtures" / "run_config_before_issue14.yaml"


def literal_fields(cls: type = Config, prefix: str = "") -> list[tuple[str, tuple, bool]]:
    """(dotted key, choices, is a tuple of choices) of every Literal field of the schema, nested included."""
    found = []
    for field in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[field.name]
        key = prefix + field.name
        if dataclasses.is_dataclass(hint):
            found += literal_fields(hint, key + ".")
        elif typing.get_origin(hint) is typing.Literal:
            found.append((key, typing.get_args(hint), False))
        elif typing.get_origin(hint) is tuple and typing.get_origin(typing.get_args(hint)[0]) is typing.Literal:
            found.append((key, typing.get_args(typing.get_args(hint)[0]), True))
    return found


LITERALS = literal_fields()


def test_the_choice_fields_are_literals():
    keys = {key for key, _, _ in LITERALS}
    assert {
        "mode",
        "data.uncertainty",
        "data.blank",
        "data.mask_no_positive",
        "data.missing",
        "data.bad_images",
        "augment.tta",
        "augment.tta_average",
        "spml.mpc.teacher",
        "train.precision",
        "train.best_metric",
        "train.nonfinite",
        "eval.study_level",
    } <= keys


@pytest.mark.parametrize("key, choices, many", LITERALS, ids=[key for key, _, _ in LITERALS])
def test_each_choice_loads_and_another_value_is_refused_naming_key_value_and_choices(key, choices, many):
    for choice in choices:
        value = f"[{choice}]" if many else (repr(choice) if choice in ("", "no") else choice)
        config = load_config([], [f"{key}={value}"])
        loaded = config
        for part in key.split("."):
            loaded = getattr(loaded, part)
        assert loaded == ((choice,) if many else choice)
    bad = "[identity, nope]" if many else "nope"
    with pytest.raises(ConfigError) as info:
        load_config([], [f"{key}={bad}"])
    message = str(info.value)
    assert message.startswith(f"{key}{'[1]' if many else ''}: 'nope' is not one of {list(choices)}"), message


def test_yaml_booleans_are_not_mistaken_for_choices():
    with pytest.raises(ConfigError, match=r"train.precision: False is not one of \['no', 'bf16', 'fp16'\]"):
        load_config([], ["train.precision=no"])  # YAML 1.1 reads a bare no as false
    assert load_config([], ["train.precision='no'"]).train.precision == "no"


REGISTRY_CHOICES = [
    ("spml.objective", OBJECTIVES["spml"], "spml"),
    ("supervised.objective", OBJECTIVES["supervised"], "supervised"),
    ("spml.mpc.threshold", THRESHOLDS, "spml"),
    ("spml.mpc.targets", TARGETS, "spml"),
    ("spml.mpc.consistency", CONSISTENCY, "spml"),
    ("spml.mpc.base_after_warmup", BASE_TERMS, "spml"),
    ("data.split", SPLIT_SCHEMES, "spml"),
    ("model.head", HEADS, "spml"),
    ("data.dataset", READERS, "supervised"),
]


@pytest.mark.parametrize("key, registry, mode", REGISTRY_CHOICES, ids=[key for key, _, _ in REGISTRY_CHOICES])
def test_registry_choices_are_checked_by_their_registry_alone_naming_key_and_names(key, registry, mode):
    assert key not in {name for name, _, _ in LITERALS}  # never listed twice
    for name in registry.names():
        check_choices(load_config([], [f"{key}={name}"], mode=mode))
    config = load_config([], [f"{key}=nope"], mode=mode)  # the loader takes any string ...
    with pytest.raises(KeyError) as info:  # ... the registry refuses it, before anything is built or read
        check_choices(config)
    assert str(info.value.args[0]).startswith(f"{key}: unknown ") and str(registry.names()) in str(info.value)


def test_fixed_choices_without_a_registry_stay_literals():
    choices = {key: set(values) for key, values, _ in LITERALS}
    assert choices["eval.threshold_rule"] == set(RULES) and choices["eval.calibration"] == set(METHODS)
    assert "eval.heatmap_method" not in choices and set(HEATMAP_METHODS.names()) >= {"gradcam"}


@pytest.mark.parametrize(
    "override, replacement",
    [
        ("spml.method=em", "spml.objective=loss loss.name=em"),
        ("spml.params={delta: 0.2}", "loss.params"),
        ("spml.mpc.base_loss=an", "loss.name"),
        ("spml.mpc.base_params={}", "loss.params"),
        ("augment.elastic.enabled=false", "spml.mpc.red=false"),
        ("name=x", "train.out"),
        ("eval.split=val", "--split"),
    ],
)
def test_removed_keys_fail_naming_their_replacement(override, replacement, tmp_path):
    key = override.split("=")[0]
    with pytest.raises(ConfigError) as info:
        load_config([], [override])
    assert str(info.value).startswith(f"{key}: ") and replacement in str(info.value) and key in REMOVED
    parts = key.split(".")  # the same key in a YAML file
    (tmp_path / "old.yaml").write_text(
        "".join(f"{'  ' * i}{part}:\n" for i, part in enumerate(parts[:-1]))
        + f"{'  ' * (len(parts) - 1)}{parts[-1]}: x\n"
    )
    with pytest.raises(ConfigError, match=f"^{key}: "):
        load_config([tmp_path / "old.yaml"])


def test_the_loss_default_depends_on_the_mode():
    assert load_config([], mode="supervised").loss.name == "bce"
    assert load_config([], mode="spml").loss.name == "em"
    assert load_config([], ["loss.name=an"], mode="spml").loss.name == "an"


def test_a_run_folder_saved_by_an_earlier_spml_loads_as_the_same_run(tmp_path):
    run = tmp_path / "old_run"
    run.mkdir()
    shutil.copy(OLD_RUN_CONFIG, run / "config.yaml")
    with pytest.raises(ConfigError, match="^name: removed"):
        load_config([run / "config.yaml"])  # as a plain config file its old keys are errors ...
    config = load_config(run_dir=run)  # ... as a run folder's record it is upgraded
    # the quick start then and now: the same run (today's also scores the test split with TTA at the end)
    # (train.best_metric: the old record says val/mAP, what today's auto is without data.mask_val)
    today = load_config(
        [REPO / "configs" / "quickstart.yaml"],
        ["train.out=/tmp/qs_baseline", "eval.tta=false", "train.best_metric=val/mAP"],
    )
    assert config == today
    assert (config.spml.objective, config.loss.name, config.spml.mpc.red) == ("mpc", "em", True)


@pytest.mark.parametrize(
    "old, expected",
    [
        (
            {"spml": {"method": "ll_r", "params": {"delta": 0.3}}},
            {"spml.objective": "loss", "loss.name": "ll_r", "loss.params": {"delta": 0.3}},
        ),
        (
            {"spml": {"method": "mpc", "mpc": {"base_loss": "an", "base_params": {"a": 1}}}},
            {"spml.objective": "mpc", "loss.name": "an", "loss.params": {"a": 1}},
        ),
        (
            {"mode": "supervised", "loss": {"name": "zlpr"}, "spml": {"method": "em"}},
            {"spml.objective": "loss", "loss.name": "zlpr"},
        ),
        ({"augment": {"elastic": {"enabled": False}}, "spml": {"mpc": {"red": True}}}, {"spml.mpc.red": False}),
    ],
)
def test_saved_configs_upgrade_key_by_key(tmp_path, old, expected):
    import yaml

    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    config = load_config(run_dir=tmp_path)
    for key, value in expected.items():
        loaded = config
        for part in key.split("."):
            loaded = getattr(loaded, part)
        assert loaded == value, key
