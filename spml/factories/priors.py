"""Config + data -> the class priors of the prior-based calibration and thresholds under data.mask_val
(spml.evaluation.positive_unlabeled), or None when the val split keeps its full labels."""

from __future__ import annotations

import numpy as np

from spml.config import Config, ConfigError
from spml.data.build import DataBundle
from spml.evaluation.positive_unlabeled import ClassPriors, estimate_priors, resolve_priors


def class_priors(config: Config, bundle: DataBundle) -> ClassPriors | None:
    """The class priors of the prior-based calibration and thresholds under data.mask_val; None without it.

    data.class_priors for the classes it names; the others estimated from the train split, which holds no hidden
    label either: in spml mode k x (the class's share of the observed positives) with k the run's expected
    positives per image (estimate_priors), in supervised mode (a partially labelled file) the class's positive
    share among its known train entries.

    Args:
        config: the run's config.
        bundle: the run's data.

    Returns:
        The ClassPriors (values, source per class, how they were found), or None without data.mask_val.
    """
    if not config.data.mask_val:
        return None
    train, classes = bundle.train, list(bundle.classes)
    observed = train.observed.numpy()
    if config.mode == "spml":
        rows = int(observed.any(1).sum())
        estimated = estimate_priors(observed.sum(0), rows, bundle.expected_positives)
        how = (
            f"k x the class's share of the {int(observed.sum())} observed train positives ({rows} images), "
            f"k = {bundle.expected_positives:.3f} expected positives per image (data_stats.json: the count of "
            "the clean val labels, the one number taken from them, as EPR/ROLE assume k known); assumes uniform "
            "single-positive masking"
        )
    else:
        known, positive = train.known.numpy(), train.targets.numpy() > 0.5
        with np.errstate(divide="ignore", invalid="ignore"):
            estimated = np.clip((positive & known).sum(0) / known.sum(0), 1e-4, 1 - 1e-4)
        how = "the class's positive share among its known train labels"
    try:
        values, source = resolve_priors(classes, config.data.class_priors, np.nan_to_num(estimated, nan=1e-4))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if "given" not in source.values():
        how = f"estimated: {how}"
    elif "estimated" in source.values():
        how = f"data.class_priors where given, else estimated: {how}"
    else:
        how = "data.class_priors"
    return ClassPriors(values, source, how)
