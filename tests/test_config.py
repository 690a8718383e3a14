"""Config: precedence, type checking, unknown keys, safe YAML, saved config round trip."""

import pytest

from spml.config import ConfigError, load_config, parse_override, save_config
from spml.registry import Registry


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_then_files_in_order_then_overrides(tmp_path):
    a = write(tmp_path, "a.yaml", "data:\n  size: 128\n  batch_size: 8\ntrain:\n  epochs: 3\n")
    b = write(tmp_path, "b.yaml", "data:\n  size: 96\n")
    config = load_config([a, b], ["train.epochs=5", "augment.scale=[0.9, 1.1]"], mode="supervised")
    assert config.data.size == 96 and config.data.batch_size == 8
    assert config.train.epochs == 5 and config.mode == "supervised"
    assert config.augment.scale == (0.9, 1.1)
    assert config.model.backbone == "resnet10t"  # untouched default


@pytest.mark.parametrize(
    "override, key",
    [
        ("data.sise=3", "data.sise"),
        ("data.size=big", "data.size"),
        ("train.epochs=1.5", "train.epochs"),
        ("model.channels_last=maybe", "model.channels_last"),
        ("spml.mpc.tau_pos=[1]", "spml.mpc.tau_pos"),
        ("nothing.here=1", "nothing"),
    ],
)
def test_bad_overrides_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config([], [override])


@pytest.mark.parametrize("text", ["=3", "data.size", "data..size=3", "1abc=2", "data.size 3"])
def test_malformed_overrides_are_config_errors(text):
    with pytest.raises(ConfigError):
        parse_override(text)


def test_unknown_key_in_file_names_file_key(tmp_path):
    path = write(tmp_path, "bad.yaml", "optim:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"optim\.learning_rate"):
        load_config([path])


def test_python_yaml_tags_are_refused(tmp_path):
    path = write(tmp_path, "evil.yaml", "data: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="safe"):
        load_config([path])


def test_saved_config_round_trips(tmp_path):
    config = load_config([], ["data.views=[PA, AP]", "loss.params={gamma: 2.0}", "mode=supervised"])
    save_config(config, tmp_path / "config.yaml")
    assert load_config([tmp_path / "config.yaml"]) == config


def test_config_is_frozen():
    config = load_config()
    with pytest.raises(Exception):
        config.data.size = 3  # type: ignore[misc]


def test_registry_fails_loudly():
    reg = Registry("thing")
    reg.register("a")(lambda: 1)
    with pytest.raises(KeyError, match="registered twice"):
        reg.register("a")(lambda: 2)
    with pytest.raises(KeyError, match=r"choose from \['a'\]"):
        reg.build("b")
    with pytest.raises(TypeError, match="thing 'a'"):
        reg.build("a", x=1)


@pytest.mark.parametrize(
    "text, key, lines",
    [
        ("data:\n  size: 32\ntrain:\n  epochs: 2\ndata:\n  batch_size: 4\n", "data", (1, 5)),
        ("data:\n  size: 32\n  batch_size: 4\n  size: 64\n", "data.size", (2, 4)),
        ("spml:\n  mpc:\n    tau_pos: 0.9\n    tau_neg: 0.1\n    tau_pos: 0.8\n", "spml.mpc.tau_pos", (3, 5)),
        ("data:\n  mask_params: {k: 2, k: 3}\n", "data.mask_params.k", (2, 2)),
        ("ablation:\n  variants:\n    - {name: a, name: b}\n", "ablation.variants[0].name", (3, 3)),
    ],
)
def test_a_key_given_twice_in_a_yaml_file_names_file_key_and_lines(tmp_path, text, key, lines):
    path = write(tmp_path, "twice.yaml", text)
    with pytest.raises(ConfigError) as caught:
        load_config([path])
    assert f"twice.yaml: key {key} appears twice (lines {lines[0]} and {lines[1]})" in str(caught.value)


def test_yaml_merge_keys_may_still_be_overridden(tmp_path):
    text = "data:\n  <<: {size: 32, batch_size: 4}\n  size: 64\n"
    expected = load_config([], ["data.size=64", "data.batch_size=4"]).data
    assert load_config([write(tmp_path, "data.yaml", text)]).data == expected


def test_a_key_given_twice_in_an_override_value_is_an_error():
    with pytest.raises(ConfigError, match=r"override loss\.params: key gamma appears twice"):
        load_config([], ["loss.params={gamma: 1, gamma: 2}"])


@pytest.mark.parametrize(
    "text, number", [("1e-3", 1e-3), ("5E4", 5e4), ("-2e+3", -2e3), ("1.0e3", 1e3), (".5e-2", 0.005), ("+3e0", 3.0)]
)
def test_exponent_numbers_read_as_numbers_in_files_as_in_overrides(tmp_path, text, number):
    from_file = load_config([write(tmp_path, "lr.yaml", f"optim:\n  lr: {text}\n")])
    assert from_file.optim.lr == number == load_config([], [f"optim.lr={text}"]).optim.lr


@pytest.mark.parametrize("text", ["1e", "e5", "1e3x", "1.2.3e4", "1e-3.5", "'1e-3'", '"5E4"'])
def test_text_that_only_looks_like_an_exponent_number_stays_text(tmp_path, text):
    config = load_config([write(tmp_path, "out.yaml", f"train:\n  out: {text}\n")])
    assert config.train.out == text.strip("'\"")
