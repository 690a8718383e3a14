"""Keys earlier spml versions had: a clear message for config files and overrides that still use them, and
the upgrade of a run folder's saved config.yaml (written with every key) to today's keys."""

from __future__ import annotations

import copy
from typing import Any

DEFAULT_BASE = "em"  # spml.mpc.base_loss's default when it was a key
REMOVED = {
    "name": "removed (it was never read); train.out names the run folder",
    "eval.split": "removed (it was never read); tools/evaluate.py RUN --split val|test chooses the evaluated split",
    "augment.elastic.enabled": "removed; spml.mpc.red=false switches random elastic deformation off "
    "(augment.elastic.p=0 leaves it out too)",
    "spml.method": "replaced: spml.objective chooses the objective (mpc | loss) and loss.name the loss, e.g. "
    "spml.method=em -> spml.objective=loss loss.name=em; spml.method=mpc -> spml.objective=mpc",
    "spml.params": "replaced by loss.params (the parameters of loss.name, MPC's base loss included)",
    "spml.mpc.base_loss": "replaced by loss.name (in spml mode it names MPC's base loss)",
    "spml.mpc.base_params": "replaced by loss.params",
    "eval.temperature": "replaced by eval.calibration (none | temperature | global_temperature | platt | isotonic): "
    "eval.temperature=per_class -> eval.calibration=temperature, global -> global_temperature, "
    "none -> none",
}
TEMPERATURE_TO_CALIBRATION = {"none": "none", "per_class": "temperature", "global": "global_temperature"}


def removed_key_message(dotted: str) -> str | None:
    """`dotted: what replaced it` for a key of an earlier version, else None.

    Args:
        dotted: the dotted config key.

    Returns:
        The message, or None for a key that was not removed.
    """
    return f"{dotted}: {REMOVED[dotted]}" if dotted in REMOVED else None


def section(data: dict[str, Any], *keys: str) -> dict[str, Any]:
    """The nested mapping data[k1][k2]..., created empty where absent (empty mappings mean defaults); a
    non-mapping is left for the loader to refuse and an unattached empty mapping is returned.

    Args:
        data: the nested config mapping (changed in place).
        *keys: the path of keys.

    Returns:
        The nested mapping.
    """
    for key in keys:
        value = data.setdefault(key, {})
        data = value if isinstance(value, dict) else {}
    return data


def upgrade_saved_config(data: dict[str, Any]) -> dict[str, Any]:
    """A run folder's config.yaml from before spml.objective/loss.name -> the same run in today's keys.

    spml.method=mpc with spml.mpc.base_loss/base_params becomes spml.objective=mpc with loss.name/params;
    any other spml.method becomes spml.objective=loss with loss.name=<method> and loss.params=spml.params
    (in spml mode; a supervised run keeps its loss); augment.elastic.enabled=false becomes spml.mpc.red=false;
    eval.temperature becomes eval.calibration (per_class -> temperature, global -> global_temperature, none -> none:
    the run's probabilities as it wrote them); name and eval.split are dropped. A config without those keys comes back
    unchanged.

    Args:
        data: the saved config as a nested dict (not changed; a deep copy is upgraded).

    Returns:
        The config in today's keys.
    """
    data = copy.deepcopy(data)
    data.pop("name", None)
    section(data, "eval").pop("split", None)
    if "temperature" in section(data, "eval"):
        temperature = section(data, "eval").pop("temperature")
        section(data, "eval")["calibration"] = TEMPERATURE_TO_CALIBRATION.get(temperature, temperature)
    spml, mpc = section(data, "spml"), section(data, "spml", "mpc")
    if section(data, "augment", "elastic").pop("enabled", True) is False:
        mpc["red"] = False
    if "method" in spml:
        method, params = spml.pop("method"), spml.pop("params", {})
        base_loss, base_params = mpc.pop("base_loss", DEFAULT_BASE), mpc.pop("base_params", {})
        spml["objective"] = "mpc" if method == "mpc" else "loss"
        if data.get("mode", "spml") == "spml":
            data["loss"] = (
                {"name": base_loss, "params": base_params} if method == "mpc" else {"name": method, "params": params}
            )
    return data
