"""Config -> components: classifier, augmentation, loss, objective, optimizer, scheduler.

Every component takes plain arguments; this module is where config values become those arguments, so an
error a component raises about a value is re-raised naming the config key (`config_key`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

from spml.augment import StrongAugment, WeakAugment
from spml.config import Config
from spml.config.schema import AugmentConfig, ModelConfig, OptimConfig
from spml.data.readers import READERS
from spml.data.splits import SPLIT_SCHEMES
from spml.engine.optim import build_optimizer as optimizer_by_name
from spml.engine.optim import build_scheduler as scheduler_by_name
from spml.factories.stats import DataStats
from spml.losses import build_loss, loss_family
from spml.models import HEADS, Backbone, Classifier
from spml.objectives import BASE_TERMS, CONSISTENCY, OBJECTIVES, TARGETS, THRESHOLDS, Objective

NAMES_A_KEY = re.compile(r"^[a-z_]+(\.[a-z_]+)+[:= ]")  # a message that already starts with a dotted config key


@contextmanager
def config_key(key: str) -> Iterator[None]:
    """Re-raise a component's ValueError / KeyError / FileNotFoundError about a config value with `key` in front.

    A message that already starts with a dotted config key is re-raised unchanged.

    Args:
        key: the config key (or keys) to name.

    Yields:
        None: the block whose errors are re-raised.
    """
    try:
        yield
    except (ValueError, KeyError, FileNotFoundError) as err:
        message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
        if NAMES_A_KEY.match(message):
            raise
        raise type(err)(f"{key}: {message}") from None


# ---------------------------------------------------------------------------------------------------- models
def backbone_arguments(model: ModelConfig) -> dict[str, Any]:
    """Backbone's arguments; the weights' file is the one spml.factories.weights.prepare_weights located.

    Args:
        model: the model section.

    Returns:
        {name, pretrained, in_chans, drop_path, channels_last, compile, pretrained_file}.
    """
    return {
        "name": model.backbone,
        "pretrained": model.pretrained,
        "in_chans": model.in_chans,
        "drop_path": model.drop_path,
        "channels_last": model.channels_last,
        "compile": model.compile,
        "pretrained_file": model.pretrained_record.get("location", "") if model.pretrained else "",
    }


def head_arguments(model: ModelConfig) -> dict[str, Any]:
    """model.head's own constructor arguments from model.* (each head takes the ones it accepts).

    Args:
        model: the model section.

    Returns:
        The arguments model.head accepts, by name.
    """
    context = {
        "drop_rate": model.drop_rate,
        "hidden": model.head_hidden,
        "channels": model.head_hidden,
        "embedding_dim": model.embedding_dim,
        "prototypes": model.prototypes,
        "boost": model.boost,
    }
    with config_key("model.head"):
        return HEADS.accepted(model.head, context)


def build_classifier(config: Config, num_classes: int) -> Classifier:
    """Backbone(model.*) + the model.head head + normalisation with augment.mean/std.

    Args:
        config: the run's config.
        num_classes: the number of outputs C.

    Returns:
        The Classifier: images (B, in_chans, S, S) -> logits (B, C).
    """
    model = config.model
    with config_key(f"model.backbone={model.backbone}"):
        backbone = Backbone(**backbone_arguments(model))
    with config_key(f"model.head={model.head}"):
        head = HEADS.build(
            model.head, num_features=backbone.num_features, num_classes=num_classes, **head_arguments(model)
        )
    with config_key("augment.std"):
        return Classifier(backbone, head, config.augment.mean, config.augment.std)


# ---------------------------------------------------------------------------------------------------- augment
def build_weak(augment: AugmentConfig) -> WeakAugment:
    """Weak view: augment.flip_p, degrees, translate, scale.

    Args:
        augment: the augment section.

    Returns:
        The WeakAugment.
    """
    return WeakAugment(augment.flip_p, augment.degrees, augment.translate, augment.scale)


def build_strong(augment: AugmentConfig, red: bool) -> StrongAugment:
    """Strong view: the weak ops with augment.strong_degrees, RED, the intensity ops and erasing.

    Args:
        augment: the augment section.
        red: use RED (augment.elastic); without it the elastic probability is 0.

    Returns:
        The StrongAugment.
    """
    elastic = augment.elastic
    with config_key("augment.elastic"):
        return StrongAugment(
            augment.flip_p,
            augment.strong_degrees,
            augment.translate,
            augment.scale,
            elastic_p=elastic.p if red else 0.0,
            elastic_kernel_size=elastic.kernel_size,
            elastic_sigma=elastic.sigma,
            elastic_alpha=elastic.alpha,
            brightness=augment.brightness,
            contrast=augment.contrast,
            gamma=augment.gamma,
            noise_std=augment.noise_std,
            blur_p=augment.blur_p,
            erasing_p=augment.erasing_p,
        )


# ---------------------------------------------------------------------------------------------------- losses
def objective_loss(config: Config, stats: DataStats) -> nn.Module:
    """loss.name with loss.params from the mode's family (spml.losses.build_loss).

    The loss is given the dataset facts its constructor accepts (and train.epochs for losses that schedule over the
    run).

    Args:
        config: the run's config.
        stats: the training-set facts.

    Returns:
        The loss module.
    """
    loss = config.loss
    context = {
        "pos_counts": stats.pos_counts,
        "num_samples": stats.num_images,
        "num_classes": stats.num_classes,
        "num_images": stats.num_images,
        "expected_positives": stats.expected_positives,
        "num_epochs": config.train.epochs,
    }  # schedules over the run (GR Loss)
    with config_key("loss.name"):
        loss_family(config.mode, loss.name).get(loss.name)
    with config_key(f"loss.name={loss.name}"):
        return build_loss(loss.name, loss.params, mode=config.mode, **context)


# ---------------------------------------------------------------------------------------------------- objectives
STRATEGIES = {"threshold": THRESHOLDS, "targets": TARGETS, "consistency": CONSISTENCY, "base_after_warmup": BASE_TERMS}


def check_choices(config: Config) -> None:
    """Look up the registry-backed choices that are not Literals of the schema, before anything is built or read.

    An unknown name is an error naming the key and the registered names: the objective of the mode
    (supervised.objective | spml.objective), MPC's strategies (spml.mpc.*), loss.name, model.head, data.dataset and
    data.split.

    Args:
        config: the run's config.
    """
    section = config.supervised if config.mode == "supervised" else config.spml
    lookups = [
        (f"{config.mode}.objective", OBJECTIVES[config.mode], section.objective),
        *((f"spml.mpc.{key}", registry, getattr(config.spml.mpc, key)) for key, registry in STRATEGIES.items()),
        ("model.head", HEADS, config.model.head),
        ("data.dataset", READERS, config.data.dataset),
        ("data.split", SPLIT_SCHEMES, config.data.split),
    ]
    for key, registry, name in lookups:
        with config_key(key):
            registry.get(name)
    with config_key("loss.name"):
        loss_family(config.mode, config.loss.name).get(config.loss.name)


def build_objective(config: Config, stats: DataStats) -> Objective:
    """The objective of the mode (supervised.objective or spml.objective, an OBJECTIVES name).

    It gets its classifier, weak view and loss (built in this order: the global RNG draws of the initial weights
    follow it), and is offered the strong view (augment.*, spml.mpc.red), every spml.mpc.* value and the dataset
    facts.

    Args:
        config: the run's config.
        stats: the training-set facts.

    Returns:
        The Objective.
    """
    check_choices(config)
    classifier = build_classifier(config, stats.num_classes)
    weak = build_weak(config.augment)
    loss = objective_loss(config, stats)
    mpc = config.spml.mpc
    name = (config.supervised if config.mode == "supervised" else config.spml).objective
    context = {
        "classifier": classifier,
        "loss": loss,
        "weak": weak,
        "strong": build_strong(config.augment, mpc.red),
        "num_classes": stats.num_classes,
        "class_prior": stats.class_prior,
        "observed_rate": stats.pos_counts.float() / max(stats.num_images, 1),
        **{field.name: getattr(mpc, field.name) for field in dataclasses.fields(mpc)},
    }
    with config_key(f"{config.mode}.objective={name}, model.head={config.model.head!r}"):
        return OBJECTIVES[config.mode].build_in_context(name, context=context)


# ---------------------------------------------------------------------------------------------------- optimisation
def build_optimizer(model: nn.Module, optim: OptimConfig):
    """The optim.name timm optimizer over `model`'s parameter groups (spml.engine.optim).

    The parameters of its classifier's backbone learn at optim.backbone_lr_scale times optim.lr.

    Args:
        model: the module to optimise (an objective with a `classifier`, or any module).
        optim: the optim section.

    Returns:
        The optimizer.
    """
    backbone = model.classifier.backbone if hasattr(model, "classifier") else None
    with config_key("optim"):
        return optimizer_by_name(model, optim.name, optim.lr, optim.weight_decay, backbone, optim.backbone_lr_scale)


def build_scheduler(optimizer, optim: OptimConfig, epochs: int, updates_per_epoch: int):
    """The optim.scheduler timm scheduler, stepped per optimizer update.

    Args:
        optimizer: the optimizer it schedules.
        optim: the optim section (scheduler, lr, warmup_epochs, min_lr).
        epochs: the run's epochs.
        updates_per_epoch: optimizer updates per epoch.

    Returns:
        The scheduler.
    """
    with config_key("optim.scheduler"):
        return scheduler_by_name(
            optimizer, optim.scheduler, epochs, updates_per_epoch, optim.lr, optim.warmup_epochs, optim.min_lr
        )
