"""Config -> the pretrained weights a run starts from: fetched (main process first), hashed, and their
normalisation put into the config that the run records (config.yaml), before any data is read."""

from __future__ import annotations

import dataclasses
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from spml.config import Config, load_config
from spml.factories.components import config_key
from spml.models.weights import (
    WeightsSpec,
    locate,
    normalization,
    parse_weights,
    spec_for_name,
    weights_record,
)


def prepare_weights(config: Config, accelerator: Accelerator | None = None, download: bool = True) -> Config:
    """`config` with model.pretrained_record filled (name, source, tag, file, location, sha256, normalize) and, under
    augment.normalize=weights, augment.mean/std set to the weights' normalisation.

    The weights' file is found in its library's cache or, unless offline, downloaded there by the main process
    first (accelerate's main_process_first: the other processes wait, then find it in the shared cache; only on a
    node whose cache is not shared do they fetch their own copy). Offline and not cached: a WeightsUnavailable
    error naming the weights, the cache folder and the fetch command.

    Args:
        config: the run's config. accelerator: the run's (None: one process). download: allow downloads.

    Returns:
        The config to record and build from (random init: model.pretrained_record empty, augment unchanged).
    """
    model, augment = config.model, config.augment
    with config_key("model.pretrained"):
        spec = parse_weights(model.backbone, model.pretrained)
    if spec is None:
        return dataclasses.replace(config, model=dataclasses.replace(model, pretrained_record={}))
    error: Exception | None = None
    with accelerator.main_process_first() if accelerator is not None else nullcontext():
        try:  # an error leaves the block normally, so the waiting processes are released and fail alike
            with config_key("model.pretrained"):  # the others find the main process's file (a node with a cache
                location = locate(spec, download=download)  # of its own fetches it there after the main process)
        except Exception as caught:  # noqa: BLE001 - re-raised right below, outside the barrier
            error = caught
    if error is not None:
        raise error
    record: dict[str, Any] = weights_record(spec, location)
    found = normalization(spec, location)
    if augment.normalize == "weights" and found is not None:
        augment = dataclasses.replace(augment, mean=found[0], std=found[1])
        source = found[2]
    else:
        source = "augment.mean/std" + (
            " (augment.normalize=config)" if found is not None else " (the weights record no normalisation)"
        )
    record["normalize"] = {"mean": augment.mean, "std": augment.std, "source": source}
    return dataclasses.replace(config, model=dataclasses.replace(model, pretrained_record=record), augment=augment)


def without_pretrained(config: Config) -> Config:
    """`config` building the same architecture without loading pretrained weights.

    For a resume: the checkpoint holds every weight.

    Args:
        config: the run's config.

    Returns:
        The config with model.pretrained and model.pretrained_record empty.
    """
    return dataclasses.replace(config, model=dataclasses.replace(config.model, pretrained="", pretrained_record={}))


def weights_to_fetch(
    items: list[str], overrides: tuple[str, ...] = (), notes: list[str] | None = None
) -> list[WeightsSpec]:
    """The weights named by `items`; duplicates are dropped.

    YAML config files (their model.backbone + model.pretrained, with `overrides`) or weights names
    (spml.models.weights.spec_for_name); random-init configs name none. A config whose model.prototypes file does not
    exist adds a line to `notes` (it is made, not fetched).

    Args:
        items: config files or weights names.
        overrides: `key=value` overrides for the config files.
        notes: a list the prototype notes are appended to (None: no notes).

    Returns:
        The WeightsSpecs to fetch.
    """
    specs: dict[str, WeightsSpec] = {}
    for item in items:
        if item.endswith((".yaml", ".yml")):
            config = load_config([item], overrides)
            if config.model.prototypes and not Path(config.model.prototypes).is_file() and notes is not None:
                notes.append(
                    f"{item}: model.prototypes={config.model.prototypes} does not exist yet; write it with "
                    f"tools/make_prototypes.py (its comment shows how; fetch a hub text encoder here with "
                    f"--encoder NAME)"
                )
            with config_key(f"{item}: model.pretrained"):
                spec = parse_weights(config.model.backbone, config.model.pretrained)
        else:
            with config_key(f"weights {item!r}"):
                spec = spec_for_name(item)
        if spec is not None:
            specs.setdefault(f"{spec.source}:{spec.tag}", spec)
    return list(specs.values())


def fetch_all(specs: list[WeightsSpec]) -> list[tuple[WeightsSpec, dict[str, Any]]]:
    """Fetch each spec into its library's cache (spml.models.weights.locate).

    Args:
        specs: the weights to fetch.

    Returns:
        [(spec, its weights record)].
    """
    return [(spec, weights_record(spec, locate(spec, download=True))) for spec in specs]
