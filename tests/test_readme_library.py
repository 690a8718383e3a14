"""The README's "Use spml as a library" loop runs as written (extracted from README.md, so it cannot drift), and
every name of spml's public API resolves."""
import re

import torch

import spml
from tests.conftest import REPO


def library_block() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Use spml as a library", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_library_loop_trains_mpc_without_the_trainer(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = library_block()
    assert "spml.MPCObjective(" in code and "Trainer" not in code
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    objective, probs, classes = namespace["objective"], namespace["probs"], namespace["classes"]
    assert objective.step == 3 * len(namespace["loader"])  # told the progress, warm-up and ramp over
    assert probs.shape == (len(namespace["batch"]["image"]), len(classes)) and ((probs >= 0) & (probs <= 1)).all()
    assert torch.isfinite(namespace["loss"]) and objective.ramp(1.0) == 1.0


def test_the_public_api_resolves():
    for name in spml.__all__:
        assert getattr(spml, name) is not None, name
    assert callable(spml.load_model) and spml.MPCObjective.__module__ == "spml.objectives.mpc"
