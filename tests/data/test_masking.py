"""Label masking: the REFERENCE protocol, determinism, partial schemes, manifest checks, the real CheXpert file."""

import hashlib
import json
import time

import numpy as np
import pytest

from spml.data.masking import MASKING, load_masked, manifest_path, mask_table, read_masked, row_keys, write_masked
from spml.data.table import DataError, make_table

CLASSES = ("A", "B", "C", "D")


def small_table(n=400, seed=0, source_hash="0" * 64):
    rng = np.random.RandomState(seed)
    values = rng.choice([1.0, 0.0, -1.0, np.nan], size=(n, len(CLASSES)), p=[0.3, 0.4, 0.15, 0.15])
    paths = [f"/data/root/p{i % 97}/img{i}.png" for i in rng.permutation(n)]
    return make_table(
        {"path": paths, "patient_id": [p.split("/")[3] for p in paths]},
        values,
        CLASSES,
        "/data/root/labels.csv",
        source_hash,
    )


def reference_single_positive(table, seed, root):
    """Loop form of REFERENCE.md section 2: rows sorted by path, one draw per row, uniform pick."""
    rng = np.random.RandomState(seed)
    keys = row_keys(table.frame["path"].to_numpy(), root)
    values = table.values()
    out = {}
    for i in sorted(range(len(keys)), key=lambda i: keys[i]):
        draw = rng.random_sample()
        certain = np.flatnonzero(values[i] == 1)
        if len(certain):
            out[keys[i]] = certain[int(draw * len(certain))]
    return out


def test_single_positive_follows_the_protocol():
    table = small_table()
    frame, manifest = mask_table(table, "single_positive", seed=1200, root="/data/root")
    expected = reference_single_positive(table, 1200, "/data/root")
    assert frame["path"].tolist() == sorted(expected)
    observed = frame[list(CLASSES)].to_numpy()
    assert ((observed == 1).sum(1) == 1).all() and np.isnan(observed[observed != 1]).all()
    assert [int(np.flatnonzero(row == 1)[0]) for row in observed] == [expected[k] for k in frame["path"]]
    original = table.frame.set_index(row_keys(table.frame["path"].to_numpy(), "/data/root"))[list(CLASSES)]
    truth = original.loc[frame["path"]].to_numpy()
    assert (truth[observed == 1] == 1).all()  # never an uncertain -1
    no_positive = int((~(table.values() == 1).any(1)).sum())
    assert manifest["rows_dropped"] == no_positive > 0 and manifest["rows_kept"] == len(frame)
    assert sum(manifest["observed_positives"].values()) == len(frame)
    assert sum(manifest["hidden_positives"].values()) + len(frame) == int((truth == 1).sum())
    kept_all, manifest_keep = mask_table(table, "single_positive", seed=1200, no_positive="keep", root="/data/root")
    assert len(kept_all) == len(table.frame) and manifest_keep["rows_dropped"] == 0
    assert np.isnan(kept_all[list(CLASSES)].to_numpy()).all(1).sum() == no_positive


def test_single_positive_is_uniform_among_certain_positives():
    values = np.tile([1.0, -1.0, 1.0, 1.0], (30_000, 1))
    observed = MASKING.get("single_positive")(values, np.random.RandomState(0))
    share = (observed == 1).mean(0)
    assert share[1] == 0 and np.allclose(share[[0, 2, 3]], 1 / 3, atol=0.01)


def test_same_input_and_seed_give_byte_identical_files(tmp_path):
    table = small_table()
    digests = []
    for name in ("a.csv", "b.csv"):
        manifest = write_masked(*mask_table(table, seed=7, root="/data/root"), tmp_path / name)
        digests.append((tmp_path / name).read_bytes())
        assert manifest["masked_sha256"] == hashlib.sha256(digests[-1]).hexdigest()
    assert digests[0] == digests[1]
    assert json.loads(open(manifest_path(tmp_path / "a.csv")).read()) == json.loads(
        open(manifest_path(tmp_path / "b.csv")).read()
    )
    write_masked(*mask_table(table, seed=8, root="/data/root"), tmp_path / "c.csv")
    assert (tmp_path / "c.csv").read_bytes() != digests[0]
    shuffled = table.subset(np.random.RandomState(1).permutation(len(table.frame)))  # row order of the input
    write_masked(*mask_table(shuffled, seed=7, root="/data/root"), tmp_path / "d.csv")
    assert (tmp_path / "d.csv").read_bytes() == digests[0]


def test_keep_k_and_keep_fraction():
    table = small_table()
    values = table.values()
    frame, manifest = mask_table(table, "keep_k", seed=0, k=2)
    observed = frame[list(CLASSES)].to_numpy()
    certain = np.sort((values == 1).sum(1)[np.argsort(table.frame["path"].to_numpy(), kind="stable")])
    assert np.sort((observed == 1).sum(1)).tolist() == np.minimum(certain[certain > 0], 2).tolist()
    assert manifest["scheme_params"] == {"k": 2}
    frame, manifest = mask_table(table, "keep_fraction", seed=0, no_positive="keep", fraction=0.25)
    observed = frame[list(CLASSES)].to_numpy()
    known = int(((values == 1) | (values == 0)).sum())
    assert int((~np.isnan(observed)).sum()) == round(0.25 * known)
    truth = table.frame.set_index("path").loc[frame["path"], list(CLASSES)].to_numpy()
    kept = ~np.isnan(observed)
    np.testing.assert_array_equal(observed[kept], truth[kept])  # kept labels keep their value, 0 included
    assert (observed[kept] == 0).any()
    with pytest.raises(DataError, match="fraction=1.5"):
        mask_table(table, "keep_fraction", fraction=1.5)
    with pytest.raises(KeyError, match="unknown masking scheme 'one_positive'"):
        mask_table(table, "one_positive")


def test_load_masked_aligns_by_path_and_refuses_mismatches(tmp_path):
    table = small_table()
    frame, manifest = mask_table(table, seed=3, root="/data/root")
    path = tmp_path / "masked.csv"
    write_masked(frame, manifest, path)
    shuffled = table.subset(np.random.RandomState(0).permutation(len(table.frame)))
    values = load_masked(path, shuffled, root="/data/root")
    by_key = frame.set_index("path")[list(CLASSES)]
    keys = row_keys(shuffled.frame["path"].to_numpy(), "/data/root")
    present = np.isin(keys, frame["path"])
    np.testing.assert_array_equal(values[present], by_key.loc[keys[present]].to_numpy())
    assert np.isnan(values[~present]).all() and (~present).sum() == manifest["rows_dropped"]
    round_trip, _ = read_masked(path)
    np.testing.assert_array_equal(round_trip[list(CLASSES)].to_numpy(), frame[list(CLASSES)].to_numpy())

    other_source = small_table(source_hash="1" * 64)
    with pytest.raises(DataError, match="re-run tools/mask_labels.py"):
        load_masked(path, other_source, root="/data/root")
    renamed = make_table(
        {"path": table.frame["path"]}, table.values(), ("A", "B", "C", "E"), table.source, table.source_hash
    )
    with pytest.raises(DataError, match=r"has classes \['A', 'B', 'C', 'D'\]"):
        load_masked(path, renamed, root="/data/root")
    with pytest.raises(DataError, match="paths in the file are relative to the root '/data/root'"):
        load_masked(path, table, root="/elsewhere")
    text = path.read_text()
    path.write_text(text.replace(",1", ",0", 1))  # same length, one positive turned negative
    with pytest.raises(DataError, match="edited after masking"):
        load_masked(path, table, root="/data/root")
    (tmp_path / "lonely.csv").write_text(text)
    with pytest.raises(DataError, match="has no manifest"):
        load_masked(tmp_path / "lonely.csv", table)


def test_in_memory_rows_get_position_keys():
    assert row_keys(np.array(["", "", "/r/a.png"], dtype=object), "/r").tolist() == ["#0", "#1", "a.png"]


def test_mask_labels_tool_on_real_chexpert(tmp_path, kit, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("mask_labels", kit.TOOLS / "mask_labels.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "masked.csv"
    start = time.perf_counter()
    assert (
        tool.main(
            [
                "--dataset",
                "chexpert",
                "--csv",
                str(kit.CHEXPERT_LABELS),
                "--scheme",
                "single_positive",
                "--seed",
                "1200",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    elapsed = time.perf_counter() - start
    printed = capsys.readouterr().out
    manifest = json.loads(open(manifest_path(out)).read())
    assert manifest["rows_in"] == 223_414 and manifest["rows_kept"] + manifest["rows_dropped"] == 223_414
    assert "rows in 223414" in printed and "hidden" in printed and "time" in printed
    assert elapsed < 20, f"masking the real CheXpert file took {elapsed:.1f} s"
    frame, _ = read_masked(out)
    assert frame["path"].iloc[0].startswith("train/patient") and (frame.iloc[:, 1:].sum(axis=1) == 1).all()
    assert tool.main(["--dataset", "chexpert", "--csv", str(tmp_path / "nothing.csv"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err


def reference_first_by_count(values, descending):
    """Loop form of the biased schemes: each row's certain positive with the largest (smallest) class count."""
    counts = (values == 1).sum(0)
    chosen = {}
    for i, row in enumerate(values):
        certain = np.flatnonzero(row == 1)
        if len(certain):
            chosen[i] = min(certain, key=lambda c: (-counts[c] if descending else counts[c], c))
    return chosen


@pytest.mark.parametrize("scheme, descending", [("frequent_first", True), ("rare_first", False)])
def test_frequency_biased_schemes_pick_by_class_count(scheme, descending):
    values = small_table(seed=3).values()
    observed = MASKING.get(scheme)(values, np.random.RandomState(0))
    expected = reference_first_by_count(values, descending)
    rows = np.flatnonzero((observed == 1).any(1))
    assert rows.tolist() == sorted(expected)
    assert [int(np.flatnonzero(observed[i] == 1)[0]) for i in rows] == [expected[i] for i in rows]
    assert ((observed == 1).sum(1) <= 1).all() and (values[observed == 1] == 1).all()


def test_priority_scheme_follows_the_order_and_randomises_unlisted_classes():
    values = np.array([[1, 1, 1, 1], [0, 1, -1, 1], [np.nan, 0, 1, 1], [0, 0, 0, 0]], dtype=float)
    observed = MASKING.get("priority")(values, np.random.RandomState(0), classes=CLASSES, order=["D", "B"])
    assert np.nan_to_num(observed).tolist() == [[0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 0]]
    only_unlisted = np.tile([1.0, 0.0, 1.0, 0.0], (2000, 1))  # A and C unlisted: which comes first is seeded
    picks = {
        int(
            np.flatnonzero(
                MASKING.get("priority")(only_unlisted[:1], np.random.RandomState(seed), classes=CLASSES, order=["D"])[0]
                == 1
            )[0]
        )
        for seed in range(20)
    }
    assert picks == {0, 2}
    for order in (["X"], [], ["B", "B"]):
        with pytest.raises(DataError, match="priority: order="):
            MASKING.get("priority")(values, np.random.RandomState(0), classes=CLASSES, order=order)


def test_biased_masking_of_the_real_nih_file_through_the_tool(tmp_path, kit, capsys):
    """frequent_first observes Infiltration (the commonest NIH finding) far more often than uniform masking does,
    rare_first far less; priority puts the listed finding first; the manifest records scheme and order."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("mask_labels", kit.TOOLS / "mask_labels.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    common = ["--dataset", "nih", "--csv", str(kit.NIH_LABELS), "--seed", "1200"]
    observed = {}
    for scheme in ("single_positive", "frequent_first", "rare_first"):
        assert tool.main([*common, "--scheme", scheme, "--out", str(tmp_path / f"{scheme}.csv")]) == 0
        manifest = json.loads(open(manifest_path(tmp_path / f"{scheme}.csv")).read())
        assert manifest["scheme"] == scheme and manifest["rows_kept"] == 112_120 - 60_361  # rows with a finding
        observed[scheme] = manifest["observed_positives"]
    assert observed["frequent_first"]["Infiltration"] == 19_894  # every image with Infiltration
    assert observed["rare_first"]["Infiltration"] < observed["single_positive"]["Infiltration"] < 19_894
    assert observed["rare_first"]["Hernia"] == 227
    out = tmp_path / "priority.csv"
    assert tool.main([*common, "--scheme", "priority", "--order", "Pneumothorax, Effusion", "--out", str(out)]) == 0
    manifest = json.loads(open(manifest_path(out)).read())
    assert manifest["scheme_params"] == {"order": ["Pneumothorax", "Effusion"]}
    assert manifest["observed_positives"]["Pneumothorax"] == 5_302
    assert tool.main([*common, "--scheme", "priority", "--order", "Pneumothorax,Efusion", "--out", str(out)]) == 2
    assert "Efusion" in capsys.readouterr().err
