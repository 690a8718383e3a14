"""Multi-level Pseudo-label Consistency (MPC) for single-positive CXR training.

Reconstructed from Xiao et al. (IEEE TMI 2024) as laid out in DESIGN.md section 3, with one
measured change: the weak and strong views take two backbone passes (same work as one pass over
both), the strong one without updating batch-norm running statistics; pseudo-labels from the weak view (the student
itself or an EMA teacher) supervise three levels: the strong view with random elastic deformation (IPC, image
level), a perturbed feature stream (FPC, feature level) and a batch-transformer stream (BTC, batch
level). Every component can be switched off from the config.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from spml.models import BatchTransformer, FeaturePerturbation
from spml.models.ema import build_ema
from spml.objectives.base import OBJECTIVES, Objective, frozen_norm_statistics, ramp
from spml.objectives.pseudo_labels import (
    BASE_TERMS,
    CONSISTENCY,
    TARGETS,
    THRESHOLDS,
    BaseLoss,
    BaseLossConsistency,
    GlobalThresholds,
    HardTargets,
    PseudoLabels,
)

MAX_BT_INPUT = 16384  # widest head embedding the batch transformer projects (bilinear 128x128)


class MPCObjective(Objective):
    """L = L_base + w_ipc(t) L_ipc + w_fpc(t) L_fpc + w_btc(t) L_btc (DESIGN.md section 3).

    Reads only `image`, `observed` and `index` from the batch: hidden labels never reach it.

    Pseudo-labels (no gradient) from the teacher's weak-view probabilities q: observed positives are
    always positive; an unobserved entry is pseudo-positive when q reaches the class's positive
    threshold and pseudo-negative at or below its negative threshold; the rest are uncertain and left
    out (`thresholds`: spml.objectives.pseudo_labels.THRESHOLDS). Before `warmup_epochs` only the base
    loss trains (nothing but the observed labels); afterwards the base term is `base_term`'s and IPC, FPC
    and BTC train each stream's logits towards `targets` through `consistency`, their weights ramped
    linearly over `rampup_epochs`.

    Args:
        classifier: float images in [0, 1] -> logits; its head splits into embed/classify.
        base_loss: a single-positive loss (spml.losses.SPML_LOSSES): (logits, observed, index) -> scalar.
        weak: the weak augmentation pipeline (the pseudo-labels' view).
        strong: the strong pipeline of the image-level stream (IPC); None turns IPC off.
        perturb: the feature perturbation of the feature-level stream (FPC); None turns FPC off.
        batch_transformer: (B, D) -> (B, D) on head embeddings, the batch-level stream (BTC); None: off.
        batch_head: (B, D) -> (B, C), the BTC stream's own classifier (trained by that stream only, not part of
            the classifier, so evaluation never sees it); None: the stream shares the classifier's head
            (BatchFormer's shared classifier).
        thresholds: a THRESHOLDS strategy (default: global 0.9 / 0.1).
        targets: a TARGETS strategy (default: hard). consistency: a CONSISTENCY strategy (default: base loss).
        base_term: a BASE_TERMS strategy (default: the base loss unchanged).
        ipc_weight, fpc_weight, btc_weight: each stream's weight after the ramp.
        teacher_decay: pseudo-labels come from an EMA of the classifier with this decay in (0, 1); None: from
            the classifier's own weak-view logits.
        warmup_epochs: base loss only before this. rampup_epochs: consistency weights ramp linearly after it.
    """

    def __init__(
        self,
        classifier: nn.Module,
        base_loss: nn.Module,
        weak: nn.Module,
        strong: nn.Module | None = None,
        perturb: nn.Module | None = None,
        batch_transformer: nn.Module | None = None,
        thresholds: nn.Module | None = None,
        batch_head: nn.Module | None = None,
        targets=None,
        consistency=None,
        base_term=None,
        ipc_weight: float = 0.2,
        fpc_weight: float = 0.1,
        btc_weight: float = 0.1,
        teacher_decay: float | None = None,
        warmup_epochs: float = 1.0,
        rampup_epochs: float = 2.0,
    ):
        super().__init__(classifier, weak)
        self.base = base_loss
        self.strong, self.perturb, self.batch_transformer = strong, perturb, batch_transformer
        self.batch_head = batch_head
        self.teacher = build_ema(classifier, teacher_decay) if teacher_decay is not None else None
        self.thresholds = thresholds if thresholds is not None else GlobalThresholds()
        self.targets = targets or HardTargets()
        self.consistency = consistency or BaseLossConsistency()
        self.base_term = base_term or BaseLoss()
        self.ipc_weight, self.fpc_weight, self.btc_weight = ipc_weight, fpc_weight, btc_weight
        self.warmup_epochs, self.rampup_epochs = warmup_epochs, rampup_epochs

    def set_progress(self, step: int, steps_per_epoch: int) -> None:
        """Record the training progress and pass the epoch on to the base loss (`set_epoch`).

        Args:
            step: batches trained including this one (1 for the first).
            steps_per_epoch: batches per epoch.
        """
        super().set_progress(step, steps_per_epoch)
        self.base.set_epoch(self.epoch)

    def after_optimizer_step(self) -> None:
        if self.teacher is not None:
            self.teacher.update(self.classifier)

    def warmup_over(self) -> bool:
        return bool(self.epochs_done() >= np.float32(self.warmup_epochs))

    def ramp(self, weight: float) -> float:
        """weight * clamp((t - warmup) / rampup, 0, 1), t = progress in epochs (spml.objectives.base.ramp).

        Args:
            weight: the weight after the ramp.

        Returns:
            The weight now.
        """
        return ramp(weight, self.epochs_done(), self.warmup_epochs, self.rampup_epochs)

    @torch.no_grad()
    def pseudo_labels(self, logits: Tensor, x_weak: Tensor, observed: Tensor) -> PseudoLabels:
        """The weak view's pseudo-labels (see the class docstring); the thresholds record this batch first.

        Args:
            logits: (B, C) the classifier's weak-view logits (used when there is no EMA teacher).
            x_weak: (B, 1, H, W) the weak view (the EMA teacher's input).
            observed: (B, C) bool, True at the observed positives.

        Returns:
            PseudoLabels: positive, target and mask (B, C), and whether the warm-up is over (before it no unobserved
            entry is marked). No gradient.
        """
        if self.teacher is not None:
            probs = torch.sigmoid(self.teacher.module(x_weak).float())
        else:
            probs = torch.sigmoid(logits.detach().float())
        self.thresholds.update(probs, observed)
        positive_threshold, negative_threshold = self.thresholds()
        active = self.warmup_over()
        unobserved = ~observed & active
        positive = (probs >= positive_threshold) & unobserved
        negative = (probs <= negative_threshold) & unobserved & ~positive
        confident = observed | positive | negative
        target, mask = self.targets(probs, observed, unobserved, positive, confident)
        return PseudoLabels(positive, target, mask, active)

    def forward(self, batch: dict[str, Tensor]) -> dict:
        """One training step's loss: the base term on the weak view plus each enabled stream's ramped consistency term.

        Args:
            batch: image (B, 1, H, W) uint8 or float, observed (B, C) bool, index (B,) long; nothing else is read.

        Returns:
            loss (scalar), logits (B, C) of the weak view, components (detached: base, ipc/fpc/btc when on,
            pseudo_pos_rate, confident_rate) and pseudo_positive (B, C) bool.
        """
        head = self.classifier.head
        observed, index = batch["observed"], batch["index"]
        x = self.to_input(batch["image"])
        x_weak = self.weak(x)
        feature_map = self.classifier.features(x_weak)
        embedding = head.embed(feature_map)
        logits = head.classify(embedding)
        labels = self.pseudo_labels(logits, x_weak, observed)

        loss = self.base_term(logits, labels, self.base, observed, index)
        components = {"base": loss}
        streams = []
        if self.strong is not None:
            with frozen_norm_statistics(self.classifier):
                streams.append(("ipc", self.ipc_weight, self.classifier(self.strong(x))))
        if self.perturb is not None:
            streams.append(("fpc", self.fpc_weight, head.classify(head.embed(self.perturb(feature_map)))))
        if self.batch_transformer is not None:
            classify = self.batch_head if self.batch_head is not None else head.classify
            streams.append(("btc", self.btc_weight, classify(self.batch_transformer(embedding))))
        for name, weight, stream_logits in streams:
            components[name] = self.consistency(stream_logits, labels, self.base, observed, index)
            loss = loss + self.ramp(weight) * components[name]
        components = {k: v.detach() for k, v in components.items()}
        components["pseudo_pos_rate"] = labels.positive.float().mean()
        components["confident_rate"] = labels.mask.float().mean()
        return {"loss": loss, "logits": logits, "components": components, "pseudo_positive": labels.positive}

    @staticmethod
    def report(batch: dict[str, Tensor], out: dict) -> dict[str, Tensor]:
        """Device counts for pseudo-positive precision/recall against the hidden truth.

        Analysis only, read after the step from the batch's targets (never fed back into training). Summed over a
        log window.

        Args:
            batch: the training batch (its targets (B, C) and observed (B, C)).
            out: `forward`'s result (its pseudo_positive).

        Returns:
            true_positive, predicted and hidden counts as float scalar tensors.
        """
        hidden_positive = (batch["targets"] > 0.5) & ~batch["observed"]
        pseudo_positive = out["pseudo_positive"]
        return {
            "true_positive": (pseudo_positive & hidden_positive).sum().float(),
            "predicted": pseudo_positive.sum().float(),
            "hidden": hidden_positive.sum().float(),
        }

    @staticmethod
    def summarize(sums: dict[str, float]) -> dict[str, float]:
        """The logged values of summed `report` counts.

        Args:
            sums: true_positive, predicted and hidden, summed over a log window.

        Returns:
            pseudo/precision and pseudo/recall (0 when nothing was predicted / hidden).
        """
        return {
            "pseudo/precision": sums["true_positive"] / max(sums["predicted"], 1.0),
            "pseudo/recall": sums["true_positive"] / max(sums["hidden"], 1.0),
        }


@OBJECTIVES["spml"].register("mpc")
def build_mpc(
    classifier: nn.Module,
    loss: nn.Module,
    weak: nn.Module,
    strong: nn.Module | None,
    *,
    num_classes: int,
    class_prior: Tensor | None,
    observed_rate: Tensor,
    ipc_weight: float,
    fpc_weight: float,
    btc_weight: float,
    fp_dropout: float,
    fp_noise_std: float,
    fp_channelwise: bool,
    bt_depth: int,
    bt_heads: int,
    bt_dim_feedforward: int,
    bt_dropout: float,
    bt_head: str,
    threshold: str,
    tau_pos: float,
    tau_neg: float,
    prior_fraction: float,
    negative_fraction: float,
    memory_size: int,
    targets: str,
    consistency: str,
    base_after_warmup: str,
    teacher: str,
    teacher_decay: float,
    warmup_epochs: float,
    rampup_epochs: float,
) -> MPCObjective:
    """MPCObjective from plain settings (the spml.mpc.* keys of the same names): a stream whose weight is 0 is
    left out; the strategies are looked up in their registries (THRESHOLDS, TARGETS, CONSISTENCY, BASE_TERMS).

    Args:
        classifier: a spml.models.Classifier whose head pools before classifying (`head.pools_last`).
        loss: the base single-positive loss. weak, strong: the views (strong: with or without RED).
        num_classes: C.
        class_prior: (C,) estimated prevalence (class_prior thresholds); None without one.
        observed_rate: (C,) observed positives per image of the train split.
        ipc_weight, fpc_weight, btc_weight: weights of the image-, feature- and batch-level streams (0: left out).
        fp_dropout, fp_noise_std, fp_channelwise: the feature perturbation (dropout rate, Gaussian noise, whole
            channels or single values).
        bt_depth, bt_heads, bt_dim_feedforward, bt_dropout: the batch transformer's layers, heads, feed-forward
            width and dropout.
        bt_head: "shared" (BTC through the classifier's head) or "own" (a head trained by BTC only).
        threshold: a THRESHOLDS name (global | class_prior).
        tau_pos, tau_neg: the global thresholds.
        prior_fraction, negative_fraction, memory_size: the class_prior thresholds' shares of estimated hidden
            positives and true negatives, and the rows of teacher probabilities remembered.
        targets: a TARGETS name (hard | soft).
        consistency: a CONSISTENCY name (base | bce).
        base_after_warmup: a BASE_TERMS name (loss | positives | confident).
        teacher: "self" or "ema" (where pseudo-labels come from).
        teacher_decay: the EMA teacher's decay.
        warmup_epochs: base loss only before this.
        rampup_epochs: consistency weights ramp linearly over these epochs after warm-up.
        (spml/config/schema.py MPCConfig documents each setting.)

    Returns:
        The MPCObjective.
    """
    if not classifier.head.pools_last:
        raise ValueError(
            f"MPC's consistency streams need a head that pools before classifying (linear, mlp, "
            f"bilinear, prototype), not {type(classifier.head).__name__}; train this head with "
            "spml.objective=loss"
        )
    if teacher == "ema" and not 0 < teacher_decay < 1:  # named here: the EMA would only name its own argument
        raise ValueError(f"spml.mpc.teacher_decay: EMA decay must lie in (0, 1), got {teacher_decay}")
    embed_dim = classifier.head.embed_dim
    if btc_weight > 0 and embed_dim > MAX_BT_INPUT:
        raise ValueError(
            f"spml.mpc.btc_weight>0 with a {embed_dim}-wide head embedding: the batch transformer's "
            "projection would not fit; use model.head_hidden<=128 with the bilinear head or "
            "spml.mpc.btc_weight=0"
        )
    perturb = FeaturePerturbation(fp_dropout, fp_noise_std, fp_channelwise) if fpc_weight > 0 else None
    batch_transformer = (
        BatchTransformer(embed_dim, bt_depth, bt_heads, bt_dim_feedforward, bt_dropout) if btc_weight > 0 else None
    )
    batch_head = nn.Linear(embed_dim, num_classes) if btc_weight > 0 and bt_head == "own" else None
    context = {
        "tau_pos": tau_pos,
        "tau_neg": tau_neg,
        "class_prior": class_prior,
        "observed_rate": observed_rate,
        "prior_fraction": prior_fraction,
        "negative_fraction": negative_fraction,
        "memory_size": memory_size,
    }
    return MPCObjective(
        classifier,
        loss,
        weak,
        strong if ipc_weight > 0 else None,
        perturb,
        batch_transformer,
        THRESHOLDS.build_in_context(threshold, context=context),
        batch_head,
        targets=TARGETS.build(targets),
        consistency=CONSISTENCY.build(consistency),
        base_term=BASE_TERMS.build(base_after_warmup),
        ipc_weight=ipc_weight,
        fpc_weight=fpc_weight,
        btc_weight=btc_weight,
        teacher_decay=teacher_decay if teacher == "ema" else None,
        warmup_epochs=warmup_epochs,
        rampup_epochs=rampup_epochs,
    )
