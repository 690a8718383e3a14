"""Config fuzzing through tools/train.py main(): random and hostile override strings and flags end in a one-line
usage error (exit 2) or a valid config, never a traceback; schema-valid nonsense is refused before training."""

import dataclasses
import random
import typing

import pytest
import yaml

from spml.config import Config
from spml.factories import check_train_config
from tests.reliability.conftest import error_line, tiny_run_args

NUM_INPUTS = 400


def schema_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted leaf key of the config schema."""
    keys = []
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[field.name]):
            keys += schema_keys(hints[field.name], f"{prefix}{field.name}.")
        else:
            keys.append(prefix + field.name)
    return keys


NASTY_VALUES = [
    "",
    " ",
    "=",
    "==",
    "[",
    "]",
    "{",
    "}",
    "[1, 2",
    "{a: 1",
    "null",
    "~",
    "true",
    "yes",
    "off",
    "1e309",
    "-1e309",
    "nan",
    ".nan",
    ".inf",
    "-.inf",
    "0x1F",
    "0o17",
    "1_000",
    "9" * 60,
    "-0",
    "3.5",
    "-7",
    "'quoted'",
    '"open',
    "&a x",
    "*alias",
    "!!python/object/apply:os.system ['echo pwned']",
    "!!python/name:os.system",
    "!!binary aGVsbG8=",
    "!!set {a, b}",
    "2001-12-14",
    "a: b: c",
    "- x",
    "|",
    ">",
    "%YAML 1.2",
    "@x",
    "`x`",
    "\x00",
    "\t",
    "\n",
    "é",
    "\U0001f600",
    "[[[[[[[[[[]]]]]]]]]]",
    "{a: {b: [1, {c: 2}]}}",
    "[a, b, c]",
    "[1, 2]",
    "{}",
    "[]",
    "C:\\x\\y",
    "../../../../etc/passwd",
    "/dev/null",
    "x" * 5000,
]
FLAGS = [
    "--mode",
    "--mode=xyz",
    "--mode=spml",
    "--config",
    "--config=/nonexistent.yaml",
    "--resume=/nonexistent",
    "-x",
    "--",
    "--modee",
    "-",
    "--config=",
    "--resume",
]


def random_text(rng: random.Random) -> str:
    alphabet = "abcxyz._=-[]{}:,'\" !#&*|>%@`\\/\t\x00é\U0001f600019"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24)))


def random_key(rng: random.Random, keys: list[str]) -> str:
    key = rng.choice(keys)
    mutation = rng.randrange(8)
    if mutation == 0:
        return key.upper()
    if mutation == 1:
        return key + "." + rng.choice(["x", "", "0", "é"])
    if mutation == 2:
        return key.replace(".", rng.choice(["..", " .", "-", "/"]), 1)
    if mutation == 3:
        return key.split(".")[-1]
    if mutation == 4:
        return random_text(rng)
    return key


def random_argument(rng: random.Random, keys: list[str]) -> str:
    form = rng.randrange(10)
    key, value = random_key(rng, keys), rng.choice([*NASTY_VALUES, random_text(rng)])
    if form == 0:
        return random_text(rng)
    if form == 1:
        return rng.choice(FLAGS)
    if form == 2:
        return key
    if form == 3:
        return f"={value}"
    if form == 4:
        return f"{key} = {value}"
    return f"{key}={value}"


def fuzz_inputs(count: int = NUM_INPUTS, seed: int = 0) -> list[list[str]]:
    """`count` argument lists of 1-3 random arguments, reproducible from `seed`."""
    rng, keys = random.Random(seed), schema_keys()
    return [[random_argument(rng, keys) for _ in range(rng.randint(1, 3))] for _ in range(count)]


class DryTrainer:
    """Stands in for build_trainer's Trainer: checks the config like build_trainer does first, trains nothing."""

    def __init__(self, config: Config, **options):
        check_train_config(config)
        self.accelerator = type("NoAccelerator", (), {"end_training": staticmethod(lambda: None)})()

    def resume(self, path) -> None:
        pass

    def fit(self) -> dict:
        return {}


def test_random_overrides_give_a_usage_error_or_a_valid_config(cli, monkeypatch, tmp_path):
    monkeypatch.setattr("spml.factories.build_trainer", DryTrainer)
    monkeypatch.chdir(tmp_path)
    outcomes = {0: 0, 2: 0}
    for argv in fuzz_inputs():
        code, _, err = cli("train", *argv)
        assert code in outcomes, (argv, code, err)
        outcomes[code] += 1
        if code == 2:
            line = error_line(err)
            assert len(line) < 6000 and line.split(": error: ", 1)[1].strip(), (argv, err)
        else:
            assert not err.strip() or "Traceback" not in err, (argv, err)
    assert sum(outcomes.values()) == NUM_INPUTS and outcomes[2] > NUM_INPUTS * 0.8, outcomes  # hostile enough
    assert not (tmp_path / "pwned").exists()


# schema-valid values the run cannot use: each is refused before a training step, naming the key or file
NONSENSE = [
    "data.size=-1",
    "data.size=3",
    "data.batch_size=0",
    "data.eval_batch_size=0",
    "data.num_workers=-1",
    "data.split=xyz",
    "data.val_fraction=1.5",
    "data.uncertainty=xyz",
    "data.bad_images=xyz",
    "data.missing=xyz",
    "data.dataset=xyz",
    "data.synthetic.num_images=0",
    "data.synthetic.num_images=3",
    "data.mask_scheme=nope",
    "data.mask_params={k: 0}",
    "optim.name=nonsense",
    "optim.lr=-1",
    "optim.scheduler=xyz",
    "optim.accumulate=0",
    "model.backbone=nope",
    "model.head=nope",
    "model.in_chans=3",
    "model.ema_decay=2",
    "model.drop_rate=2",
    "model.pretrained=/nonexistent.pth",
    "spml.method=nope",
    "spml.mpc.base_loss=nope",
    "spml.mpc.threshold=xyz",
    "spml.mpc.teacher=xyz",
    "spml.objective=nope",
    "loss.name=nope",
    "loss.name=bce",
    "augment.tta=[rotate]",
    "augment.std=0",
    "augment.elastic.kernel_size=4",
    "augment.elastic.enabled=false",
    "train.epochs=0",
    "train.log_every=0",
    "train.eval_every=0",
    "train.checkpoint_every=-1",
    "train.best_metric=xyz",
    "train.nonfinite=maybe",
    "train.precision=fp8",
    "eval.study_level=xyz",
    "train.out=/proc/forbidden",
]

# where the message names neither the key's last part nor the value as written
MESSAGE_NAMES = {
    "data.mask_params={k: 0}": ["masking scheme 'single_positive'", "argument 'k'"],
    "loss.name=bce": ["loss.name='bce' is a loss (supervised mode)"],
    "model.drop_rate=2": ["dropout probability"],
    "data.synthetic.num_images=3": ["3 images"],
}


@pytest.mark.parametrize("override", NONSENSE)
def test_schema_valid_nonsense_is_refused_before_training(cli, tmp_path, override):
    out = tmp_path / "run"
    code, _, err = cli("train", *tiny_run_args(out, "train.max_steps=1"), override)
    assert code == 2, err
    line = error_line(err)
    key, _, value = override.partition("=")
    named = MESSAGE_NAMES.get(override, (key.split(".")[-1], value))
    assert any(fragment in line for fragment in named), line
    assert not (out / "checkpoints").exists()


def test_a_config_file_with_a_section_twice_is_refused_before_training(cli, tmp_path):
    config = tmp_path / "twice.yaml"
    config.write_text("train:\n  epochs: 5\noptim:\n  lr: 0.01\ntrain:\n  max_steps: 2\n")
    out = tmp_path / "run"
    code, _, err = cli("train", "--config", str(config), *tiny_run_args(out))
    assert code == 2, err
    assert "twice.yaml: key train appears twice (lines 1 and 5)" in error_line(err)
    assert not out.exists()


def test_an_exponent_learning_rate_in_a_config_file_is_a_number(cli, tmp_path):
    config = tmp_path / "lr.yaml"
    config.write_text("optim:\n  lr: 3e-4\n  min_lr: 1E-7\n")
    out = tmp_path / "run"
    code, _, err = cli("train", "--config", str(config), *tiny_run_args(out, "train.max_steps=1", "train.epochs=1"))
    assert code == 0, err
    recorded = yaml.safe_load((out / "config.yaml").read_text())["optim"]
    assert recorded["lr"] == 3e-4 and recorded["min_lr"] == 1e-7
