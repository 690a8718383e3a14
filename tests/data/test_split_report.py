"""tools/split_report.py: per-class prevalence per split of the real NIH label file."""

import importlib.util

import pandas as pd
import pytest

from spml.data.splits import stratified_split


def test_split_report_on_real_nih(kit, nih_table, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("split_report_tool", kit.TOOLS / "split_report.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "prevalence.csv"
    assert (
        tool.main(
            [
                "data.dataset=nih",
                f"data.root={kit.NIH_IMAGES}",
                f"data.labels={kit.NIH_LABELS}",
                "data.split=stratified",
                "data.split_seed=0",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "Hernia" in printed and "largest relative deviation" in printed
    table = pd.read_csv(out, index_col="row")
    assert table.loc["images", ["train", "val", "test"]].sum() == table.loc["images", "all"] == 112_120
    split = stratified_split(nih_table.frame["patient_id"], nih_table.values() == 1, 0.1, 0.2, seed=0)
    hernia_test = (nih_table.frame["Hernia"][split == "test"] == 1).mean()
    assert table.loc["Hernia", "test"] == pytest.approx(hernia_test)
    assert table.loc["Hernia", "all"] == pytest.approx(227 / 112_120)
