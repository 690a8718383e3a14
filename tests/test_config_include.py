"""Config files can include others (`include:` paths relative to the file); the including file wins."""

import pytest

from spml.config import ConfigError, load_config
from tests.conftest import REPO


def test_includes_merge_first_relative_to_the_file_and_recursively(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "data.yaml").write_text("data: {dataset: nih, size: 128, views: [PA]}\n")
    (tmp_path / "sub" / "mid.yaml").write_text("include: data.yaml\ndata: {size: 96}\nmodel: {head: mlp}\n")
    (tmp_path / "top.yaml").write_text("include: [sub/mid.yaml]\ndata: {views: [AP]}\n")
    config = load_config([tmp_path / "top.yaml"], ["data.size=64"])
    assert (config.data.dataset, config.data.size, config.data.views, config.model.head) == ("nih", 64, ("AP",), "mlp")


def test_include_cycles_and_bad_values_name_the_file(tmp_path):
    (tmp_path / "a.yaml").write_text("include: [b.yaml]\n")
    (tmp_path / "b.yaml").write_text("include: [a.yaml]\n")
    with pytest.raises(ConfigError, match="include cycle"):
        load_config([tmp_path / "a.yaml"])
    (tmp_path / "c.yaml").write_text("include: {data: 1}\n")
    with pytest.raises(ConfigError, match=r"c.yaml: include: expected a list"):
        load_config([tmp_path / "c.yaml"])
    (tmp_path / "d.yaml").write_text("include: [missing.yaml]\n")
    with pytest.raises(ConfigError, match="missing.yaml"):
        load_config([tmp_path / "d.yaml"])


def test_paper_configs_read_the_dataset_files():
    config = load_config([REPO / "configs/papers/nih_efficientnet_mlp_bce.yaml"], ["data.root=/elsewhere"])
    assert (config.data.dataset, config.data.views, config.data.split) == ("nih", ("PA", "AP"), "stratified")
    assert config.data.root == "/elsewhere" and config.mode == "supervised" and config.eval.bootstrap == 200
