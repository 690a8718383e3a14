"""Paired comparisons over seeds (spml.reporting.stats) and their use in grid results (best full-label reference, the
validation split of selection grids)."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from spml.reporting.grid_results import aggregate, last_validation, write_results
from spml.reporting.stats import holm, paired_differences, paired_markdown


def test_holm_matches_the_hand_computed_adjustment():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    np.testing.assert_allclose(holm(np.array([0.01, 0.04, 0.03, 0.005])), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm(np.array([0.5, np.nan, 0.9])), [1.0, np.nan, 1.0])  # 2 x 0.5 caps both


def runs(values: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"variant": name, "seed": seed, "status": "done" if np.isfinite(v) else "failed", "mAP": v}
            for name, seeds in values.items()
            for seed, v in enumerate(seeds)
        ]
    )


def test_paired_differences_pair_by_seed_and_match_scipy():
    mpc = [0.70, 0.66, 0.72, 0.61, 0.68]
    em = [0.69, 0.64, 0.71, 0.60, np.nan]  # seed 4 failed: compared on 4 seeds
    an = [0.60, 0.55, 0.63, 0.50, 0.58]
    table = paired_differences(runs({"MPC": mpc, "EM": em, "AN": an}), "MPC").set_index("variant")
    diffs = np.array(mpc[:4]) - np.array(em[:4])
    assert table.loc["EM", "n"] == 4 and table.loc["EM", "diffs"] == pytest.approx(diffs.tolist())
    low, high = stats.t.interval(0.95, 3, loc=diffs.mean(), scale=stats.sem(diffs))
    assert (table.loc["EM", "ci_low"], table.loc["EM", "ci_high"]) == pytest.approx((low, high))
    assert table.loc["EM", "p"] == pytest.approx(stats.ttest_rel(mpc[:4], em[:4]).pvalue)
    assert table.loc["EM", "wins"] == 4
    # a seed-level shift that moves both methods cancels: the unpaired spread is large, the paired one small
    assert np.std(mpc) > 4 * table.loc["AN", "diff_std"]
    assert table.loc["AN", "significant"] and table.loc["AN", "ci_low"] > 0
    np.testing.assert_allclose(table["p_holm"], holm(table["p"].to_numpy()))
    text = paired_markdown(table.reset_index(), "MPC")
    assert "| AN | 5 | +0.1020 |" in text and "**MPC better**" in text


def test_single_seed_gives_no_interval_and_no_verdict():
    table = paired_differences(runs({"MPC": [0.7], "EM": [0.6]}), "MPC")
    assert table.loc[0, "n"] == 1 and np.isnan(table.loc[0, "ci_low"]) and not table.loc[0, "significant"]
    assert "| EM | 1 | +0.1000 | — | 1/1 | — | — |  |" in paired_markdown(table, "MPC")


def test_recovery_uses_the_best_listed_full_label_reference(tmp_path):
    frame = runs(
        {"full (flips only)": [0.80, 0.82], "full (weak aug)": [0.70, 0.72], "AN": [0.50, 0.52], "MPC": [0.65, 0.67]}
    )
    frame["mean_auroc"] = 0.9
    table = aggregate(frame, {"full": ["full (weak aug)", "full (flips only)"], "an": ["AN"]}).set_index("variant")
    assert table.attrs["full_reference"] == "full (flips only)"
    assert table.loc["MPC", "recovery"] == pytest.approx((0.66 - 0.51) / (0.81 - 0.51))
    text = write_results(
        frame, tmp_path, "grid", {"full": ["full (weak aug)", "full (flips only)"], "an": ["AN"]}, compare="MPC"
    )
    assert "against the best full-label variant: full (flips only)" in text
    assert "Paired differences MPC − variant (mAP" in text and (tmp_path / "paired.png").stat().st_size > 1000
    assert pd.read_csv(tmp_path / "paired.csv")["variant"].tolist() == ["AN"]  # full-label references: no competitors


def test_val_split_tables_read_the_last_validation_and_name_the_split(tmp_path):
    frame = runs({"EM+IPC": [0.60, 0.64], "MPC": [0.62, 0.63]})  # test mAP: must not be what the table shows
    frame["val_mAP"] = [0.50, 0.54, 0.40, 0.47]
    frame["mean_auroc"], frame["val_mean_auroc"] = 0.9, 0.8
    table = aggregate(frame, split="val").set_index("variant")
    assert table.loc["EM+IPC", "mAP_mean"] == pytest.approx(0.52) and table.loc["MPC", "mAP_mean"] == pytest.approx(
        0.435
    )
    text = write_results(frame, tmp_path, "selection", compare="MPC", split="val", command="python tools/ablate.py g")
    assert "| variant | val mAP | val mean AUROC | seeds |" in text and "| EM+IPC | 0.5000 | 0.5400 |" in text
    assert pd.read_csv(tmp_path / "paired.csv").loc[0, "diff_mean"] == pytest.approx(-0.085)
    meta = json.loads((tmp_path / "results.json").read_text())
    assert meta["split"] == "val" and meta["seeds"] == [0, 1] and meta["command"] == "python tools/ablate.py g"


def test_last_validation_is_read_from_the_long_format_log(tmp_path):
    (tmp_path / "log.csv").write_text(
        "step,name,value\n20,train/loss,0.5\n43,val/mAP,0.31\n43,val/mean_auroc,0.7\n"
        "86,val/mAP,0.42\n86,val/mean_auroc,0.8\n86,train/loss,0.4\n"
    )
    assert last_validation(tmp_path / "log.csv") == {"val_mAP": 0.42, "val_mean_auroc": 0.8}
    assert last_validation(tmp_path / "missing.csv") == {}
