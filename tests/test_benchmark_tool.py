"""tools/benchmark.py runs every section on tiny settings and reports its ratios (no timing asserted)."""

import importlib.util
import json

from tests.conftest import REPO


def test_benchmark_reports_every_section(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("benchmark", REPO / "tools" / "benchmark.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    out = tmp_path / "bench.json"
    assert (
        benchmark.main(
            [
                "--backbone",
                "test_efficientnet",
                "--size",
                "32",
                "--batch",
                "8",
                "--workers",
                "0",
                "--images",
                "48",
                "--source-size",
                "48",
                "--steps",
                "1",
                "--warmup",
                "0",
                "--iters",
                "1",
                "--growth-batches",
                "8",
                "--growth-sizes",
                "32",
                "--growth-steps",
                "1",
                "--bt-batch",
                "8",
                "--json",
                str(out),
                "augment.elastic.kernel_size=7",
            ]
        )
        == 0
    )
    results = json.loads(out.read_text())
    assert set(results) == {"setup", "data", "loader", "augment", "step", "eval", "growth"}
    assert results["loader"]["cache / PNG"] > 0 and results["loader"]["cache / JPEG"] > 0
    assert set(results["step"]) == {"supervised", "mpc", "mpc -IPC", "mpc -FPC", "mpc -BTC", "mpc base only"}
    assert all(0 <= row["wait_fraction"] < 1 and row["images_per_s"] > 0 for row in results["step"].values())
    assert results["step"]["mpc"]["vs supervised"] > 0 and results["eval"]["images"] > 0
    assert len(results["growth"]["grid"]) == 1 and 0 < results["growth"]["bt"]["btc_share"]
    printed = capsys.readouterr().out
    assert "cache / PNG decode" in printed and "x supervised" in printed
