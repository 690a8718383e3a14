"""Config -> components: classifier, augmentation, loss, objective, optimizer, scheduler.

Every component takes plain arguments; this module is where config values become those arguments, so an
error a component raises about a value is re-raised naming the config key (`config_key`).
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Any, Iterator

from torch import nn

from spml.augment import StrongAugment, WeakAugment
from spml.config import Config, ConfigError
from spml.config.schema import AugmentConfig, ModelConfig, OptimConfig
from spml.engine.optim import build_optimizer as optimizer_by_name
from spml.engine.optim import build_scheduler as scheduler_by_name
from spml.factories.stats import DataStats
from spml.losses import LOSSES, SPML_LOSSES
from spml.models import HEADS, Backbone, BatchTransformer, Classifier, FeaturePerturbation
from spml.objectives import (BASE_TERMS, CONSISTENCY, TARGETS, THRESHOLDS, MPCObjective, Objective,
                             SinglePositiveObjective, SupervisedConsistencyObjective, SupervisedObjective)
from spml.registry import Registry

LOSS_REGISTRIES = {"supervised": LOSSES, "spml": SPML_LOSSES}  # loss.name is looked up by mode
MAX_BT_INPUT = 16384  # widest head embedding the batch transformer projects (bilinear 128x128)
NAMES_A_KEY = re.compile(r"^[a-z_]+(\.[a-z_]+)+[:= ]")  # a message that already starts with a dotted config key


@contextmanager
def config_key(key: str) -> Iterator[None]:
    """Re-raise a component's ValueError / KeyError / FileNotFoundError about a config value with `key` in front."""
    try:
        yield
    except (ValueError, KeyError, FileNotFoundError) as err:
        message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
        if NAMES_A_KEY.match(message):
            raise
        raise type(err)(f"{key}: {message}") from None


# ---------------------------------------------------------------------------------------------------- models
def backbone_arguments(model: ModelConfig) -> dict[str, Any]:
    """Backbone's arguments; the weights' file is the one spml.factories.weights.prepare_weights located."""
    return {"name": model.backbone, "pretrained": model.pretrained, "in_chans": model.in_chans,
            "drop_path": model.drop_path, "channels_last": model.channels_last, "compile": model.compile,
            "pretrained_file": model.pretrained_record.get("location", "") if model.pretrained else ""}


def head_arguments(model: ModelConfig) -> dict[str, Any]:
    """model.head's own constructor arguments from model.* (each head takes the ones it accepts)."""
    context = {"drop_rate": model.drop_rate, "hidden": model.head_hidden, "channels": model.head_hidden,
               "embedding_dim": model.embedding_dim, "prototypes": model.prototypes, "boost": model.boost}
    with config_key("model.head"):
        return HEADS.accepted(model.head, context)


def build_classifier(config: Config, num_classes: int) -> Classifier:
    """Backbone(model.*) + the model.head head + normalisation with augment.mean/std."""
    model = config.model
    with config_key(f"model.backbone={model.backbone}"):
        backbone = Backbone(**backbone_arguments(model))
    with config_key(f"model.head={model.head}"):
        head = HEADS.build(model.head, num_features=backbone.num_features, num_classes=num_classes,
                           **head_arguments(model))
    with config_key("augment.std"):
        return Classifier(backbone, head, config.augment.mean, config.augment.std)


# ---------------------------------------------------------------------------------------------------- augment
def build_weak(augment: AugmentConfig) -> WeakAugment:
    """Weak view: augment.flip_p, degrees, translate, scale."""
    return WeakAugment(augment.flip_p, augment.degrees, augment.translate, augment.scale)


def build_strong(augment: AugmentConfig, red: bool) -> StrongAugment:
    """Strong view: the weak ops with augment.strong_degrees, RED (augment.elastic, only when `red`), the
    intensity ops and erasing."""
    elastic = augment.elastic
    with config_key("augment.elastic"):
        return StrongAugment(augment.flip_p, augment.strong_degrees, augment.translate, augment.scale,
                             elastic_p=elastic.p if red else 0.0, elastic_kernel_size=elastic.kernel_size,
                             elastic_sigma=elastic.sigma, elastic_alpha=elastic.alpha, brightness=augment.brightness,
                             contrast=augment.contrast, gamma=augment.gamma, noise_std=augment.noise_std,
                             blur_p=augment.blur_p, erasing_p=augment.erasing_p)


# ---------------------------------------------------------------------------------------------------- losses
def loss_registry(mode: str, name: str) -> Registry:
    """The registry loss.name is looked up in for `mode`; a name of the other mode's family is an error
    saying so."""
    registry = LOSS_REGISTRIES[mode]
    if name not in registry:
        other = next((m for m, r in LOSS_REGISTRIES.items() if m != mode and name in r), None)
        if other is not None:
            raise ConfigError(f"loss.name={name!r} is a {LOSS_REGISTRIES[other].kind} ({other} mode); in {mode} "
                              f"mode choose a {registry.kind} from {registry.names()}")
    return registry


def build_loss(config: Config, stats: DataStats) -> nn.Module:
    """loss.name with loss.params, from the mode's registry, given the dataset facts its constructor accepts."""
    loss = config.loss
    registry = loss_registry(config.mode, loss.name)
    context = {"pos_counts": stats.pos_counts, "num_samples": stats.num_images, "num_classes": stats.num_classes,
               "num_images": stats.num_images, "expected_positives": stats.expected_positives,
               "num_epochs": config.train.epochs}  # schedules over the run (GR Loss)
    with config_key("loss.name"):
        registry.get(loss.name)
    with config_key(f"loss.name={loss.name}"):
        return registry.build_in_context(loss.name, loss.params, context)


# ---------------------------------------------------------------------------------------------------- objectives
OBJECTIVES = Registry("objective")  # name -> builder(config, stats, classifier, weak, loss)


@OBJECTIVES.register("supervised")
def supervised_objective(config: Config, stats: DataStats, classifier: Classifier, weak: nn.Module,
                         loss: nn.Module) -> Objective:
    return SupervisedObjective(classifier, loss, weak)


@OBJECTIVES.register("supervised_consistency")
def supervised_consistency_objective(config: Config, stats: DataStats, classifier: Classifier, weak: nn.Module,
                                     loss: nn.Module) -> Objective:
    """loss.name on the weak view plus on MPC's strong view, with MPC's image-level settings (spml.mpc.ipc_weight,
    red, warmup_epochs, rampup_epochs)."""
    mpc = config.spml.mpc
    return SupervisedConsistencyObjective(classifier, loss, weak, build_strong(config.augment, mpc.red),
                                          mpc.ipc_weight, mpc.warmup_epochs, mpc.rampup_epochs)


@OBJECTIVES.register("loss")
def single_positive_objective(config: Config, stats: DataStats, classifier: Classifier, weak: nn.Module,
                              loss: nn.Module) -> Objective:
    return SinglePositiveObjective(classifier, loss, weak)


@OBJECTIVES.register("mpc")
def mpc_objective(config: Config, stats: DataStats, classifier: Classifier, weak: nn.Module,
                  loss: nn.Module) -> Objective:
    """MPCObjective with loss.name as its base loss and the spml.mpc.* streams and strategies."""
    mpc = config.spml.mpc
    if not classifier.head.pools_last:
        raise ConfigError(f"spml.objective=mpc with model.head={config.model.head!r}: MPC's consistency streams need "
                          f"a head that pools before classifying (linear, mlp, bilinear, prototype); train "
                          f"model.head={config.model.head} with spml.objective=loss")
    strong = build_strong(config.augment, mpc.red) if mpc.ipc_weight > 0 else None
    perturb = (FeaturePerturbation(mpc.fp_dropout, mpc.fp_noise_std, mpc.fp_channelwise) if mpc.fpc_weight > 0
               else None)
    embed_dim = classifier.head.embed_dim
    if mpc.btc_weight > 0 and embed_dim > MAX_BT_INPUT:
        raise ConfigError(f"spml.mpc.btc_weight>0 with a {embed_dim}-wide head embedding (model.head="
                          f"{config.model.head!r}): the batch transformer's projection would not fit; use "
                          f"model.head_hidden<=128 with the bilinear head or spml.mpc.btc_weight=0")
    batch_transformer = (BatchTransformer(embed_dim, mpc.bt_depth, mpc.bt_heads, mpc.bt_dim_feedforward,
                                          mpc.bt_dropout) if mpc.btc_weight > 0 else None)
    batch_head = nn.Linear(embed_dim, stats.num_classes) if mpc.btc_weight > 0 and mpc.bt_head == "own" else None
    context = {"tau_pos": mpc.tau_pos, "tau_neg": mpc.tau_neg, "class_prior": stats.class_prior,
               "observed_rate": stats.pos_counts.float() / max(stats.num_images, 1),
               "prior_fraction": mpc.prior_fraction, "negative_fraction": mpc.negative_fraction,
               "memory_size": mpc.memory_size}
    with config_key(f"spml.mpc.threshold={mpc.threshold}"):
        thresholds = THRESHOLDS.build_in_context(mpc.threshold, context=context)
    with config_key("spml.mpc.teacher_decay"):
        return MPCObjective(classifier, loss, weak, strong, perturb, batch_transformer, thresholds, batch_head,
                            targets=TARGETS.build(mpc.targets), consistency=CONSISTENCY.build(mpc.consistency),
                            base_term=BASE_TERMS.build(mpc.base_after_warmup), ipc_weight=mpc.ipc_weight,
                            fpc_weight=mpc.fpc_weight, btc_weight=mpc.btc_weight,
                            teacher_decay=mpc.teacher_decay if mpc.teacher == "ema" else None,
                            warmup_epochs=mpc.warmup_epochs, rampup_epochs=mpc.rampup_epochs)


def objective_name(config: Config) -> str:
    """supervised mode -> "supervised" (supervised.objective=loss) or "supervised_consistency"; spml mode ->
    spml.objective (mpc | loss)."""
    if config.mode == "supervised":
        return "supervised" if config.supervised.objective == "loss" else "supervised_consistency"
    return config.spml.objective


def build_objective(config: Config, stats: DataStats) -> Objective:
    """The objective of `config` with its classifier, weak view and loss (built in this order: the global RNG
    draws of the initial weights follow it)."""
    classifier = build_classifier(config, stats.num_classes)
    weak = build_weak(config.augment)
    loss = build_loss(config, stats)
    return OBJECTIVES.build(objective_name(config), config=config, stats=stats, classifier=classifier, weak=weak,
                            loss=loss)


# ---------------------------------------------------------------------------------------------------- optimisation
def build_optimizer(model: nn.Module, optim: OptimConfig):
    """The optim.name timm optimizer over `model`'s parameter groups (spml.engine.optim); the parameters of its
    classifier's backbone learn at optim.backbone_lr_scale times optim.lr."""
    backbone = model.classifier.backbone if hasattr(model, "classifier") else None
    with config_key("optim"):
        return optimizer_by_name(model, optim.name, optim.lr, optim.weight_decay, backbone, optim.backbone_lr_scale)


def build_scheduler(optimizer, optim: OptimConfig, epochs: int, updates_per_epoch: int):
    """The optim.scheduler timm scheduler, stepped per optimizer update."""
    with config_key("optim.scheduler"):
        return scheduler_by_name(optimizer, optim.scheduler, epochs, updates_per_epoch, optim.lr,
                                 optim.warmup_epochs, optim.min_lr)
