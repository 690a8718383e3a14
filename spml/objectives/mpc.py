"""Multi-level Pseudo-label Consistency (MPC) for single-positive CXR training.

Reconstructed from Xiao et al. (IEEE TMI 2024) as laid out in DESIGN.md section 3: weak and
strong views share one backbone forward; pseudo-labels from the weak view (EMA teacher or the
student itself) supervise the strong view (IPC, with random elastic deformation), a perturbed
feature stream (FPC) and a batch-transformer stream (BTC). Every component can be switched off.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from spml.augment import build_strong
from spml.config import Config
from spml.losses import build_spml_loss
from spml.models import BatchTransformer, FeaturePerturbation, build_ema
from spml.objectives.base import Objective
from spml.objectives.registry import OBJECTIVES, DataStats

MAX_BT_INPUT = 16384  # widest head embedding the batch transformer projects (bilinear 128x128)


def masked_bce(logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """sum(mask * BCE(logits, targets)) / max(sum(mask), 1); (B,C) inputs -> scalar, fp32."""
    per_entry = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none")
    return torch.where(mask, per_entry, 0.0).sum() / mask.sum().clamp(min=1)


@OBJECTIVES.register("mpc")
class MPCObjective(Objective):
    """L = L_base + w_ipc(t) L_ipc + w_fpc(t) L_fpc + w_btc(t) L_btc (see DESIGN.md section 3).

    Reads only `image`, `observed` and `index` from the batch. Pseudo-labels: observed positives are
    always positive; unobserved entries are pseudo-positive when the teacher probability reaches the
    class threshold and pseudo-negative at or below `tau_neg`; the rest are left out of IPC/FPC.
    With `correct_base`, pseudo-positives also stop being assumed negatives in the base loss.
    Consistency weights are 0 before `warmup_epochs` and ramp linearly over `rampup_epochs`.
    """

    def __init__(self, config: Config, stats: DataStats):
        super().__init__(config, stats.num_classes)
        self.mpc = mpc = config.spml.mpc
        if mpc.threshold not in ("global", "class_prior"):
            raise ValueError(f"spml.mpc.threshold: expected 'global' or 'class_prior', got {mpc.threshold!r}")
        if mpc.teacher not in ("ema", "self"):
            raise ValueError(f"spml.mpc.teacher: expected 'ema' or 'self', got {mpc.teacher!r}")
        self.base = build_spml_loss(mpc.base_loss, mpc.base_params, num_classes=stats.num_classes,
                                    num_images=stats.num_images, expected_positives=stats.expected_positives)
        self.strong = build_strong(config.augment, red=mpc.red) if mpc.ipc_weight > 0 else None
        self.perturb = FeaturePerturbation(mpc.fp_dropout, mpc.fp_noise_std) if mpc.fpc_weight > 0 else None
        embed_dim = self.classifier.head.embed_dim
        if mpc.btc_weight > 0 and embed_dim > MAX_BT_INPUT:
            raise ValueError(f"spml.mpc.btc_weight>0 with a {embed_dim}-wide head embedding (model.head="
                             f"{config.model.head!r}): the batch transformer's projection would not fit; use "
                             f"model.head_hidden<=128 with the bilinear head or spml.mpc.btc_weight=0")
        self.batch_transformer = (
            BatchTransformer(embed_dim, mpc.bt_depth, mpc.bt_heads, mpc.bt_dim_feedforward, mpc.bt_dropout)
            if mpc.btc_weight > 0 else None
        )
        self.teacher = build_ema(self.classifier, mpc.teacher_decay) if mpc.teacher == "ema" else None
        # Running memory of teacher probabilities for per-class (prior-matched) thresholds.
        observed_rate = stats.pos_counts.float() / max(stats.num_images, 1)
        hidden_rate = (stats.class_prior.float() - observed_rate) / (1 - observed_rate).clamp(min=1e-6)
        self.register_buffer("quantile_level", (1 - mpc.prior_fraction * hidden_rate.clamp(0, 1)).clamp(0, 1))
        self.register_buffer("memory_probs", torch.full((mpc.memory_size, stats.num_classes), float("nan")))
        self.register_buffer("memory_cursor", torch.zeros((), dtype=torch.long))

    def train(self, mode: bool = True) -> "MPCObjective":
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # the teacher predicts with its running BN statistics
        return self

    def set_epoch(self, epoch: int, steps_per_epoch: int) -> None:
        super().set_epoch(epoch, steps_per_epoch)
        self.base.set_epoch(epoch)

    def after_optimizer_step(self) -> None:
        super().after_optimizer_step()
        if self.teacher is not None:
            self.teacher.update(self.classifier)

    def ramp(self, weight: float) -> Tensor:
        """weight * clamp((t - warmup) / rampup, 0, 1) with t in epochs (device scalar)."""
        t = self.progress() - self.mpc.warmup_epochs
        if self.mpc.rampup_epochs <= 0:
            return weight * (t >= 0).float()
        return weight * (t / self.mpc.rampup_epochs).clamp(0.0, 1.0)

    @torch.no_grad()
    def positive_thresholds(self, probs: Tensor, observed: Tensor) -> Tensor:
        """Per-class pseudo-positive thresholds (C,) or a broadcastable scalar.

        class_prior: remember the teacher probabilities of unobserved entries; for class c choose the
        threshold that marks `prior_fraction` of the estimated hidden positives as positive, where the
        hidden-positive rate is (prior_c - observed_rate_c) / (1 - observed_rate_c), with observed_rate_c
        the training set's observed-positive rate. Never below tau_neg.
        """
        if self.mpc.threshold == "global":
            return probs.new_tensor(self.mpc.tau_pos)
        size = self.memory_probs.shape[0]
        rows = (self.memory_cursor + torch.arange(probs.shape[0], device=probs.device)) % size
        self.memory_probs[rows] = torch.where(observed, float("nan"), probs)
        self.memory_cursor.copy_((self.memory_cursor + probs.shape[0]) % size)
        thresholds = torch.nanquantile(self.memory_probs, self.quantile_level, dim=0).diagonal()
        return torch.nan_to_num(thresholds, nan=1.0).clamp(min=self.mpc.tau_neg + 1e-6)

    def forward(self, batch: dict[str, Tensor]) -> dict:
        self.count_step()
        mpc, head = self.mpc, self.classifier.head
        observed, index = batch["observed"], batch["index"]
        x = self.to_input(batch["image"])
        x_weak = self.weak(x)
        views = [x_weak] if self.strong is None else [x_weak, self.strong(x)]
        feature_map = self.classifier.features(self.model_input(torch.cat(views)))
        embedding = head.embed(feature_map)
        logits_all = head.classify(embedding)
        size = x.shape[0]
        logits = logits_all[:size]

        with torch.no_grad():
            if self.teacher is not None:
                probs = torch.sigmoid(self.teacher.module(self.model_input(x_weak)).float())
            else:
                probs = torch.sigmoid(logits.detach().float())
            unobserved = ~observed
            pseudo_positive = (probs >= self.positive_thresholds(probs, observed)) & unobserved
            pseudo_negative = (probs <= mpc.tau_neg) & unobserved & ~pseudo_positive
            active = self.progress() >= mpc.warmup_epochs
            pseudo_positive = pseudo_positive & active
            target = (observed | pseudo_positive).float()
            confident = observed | pseudo_positive | pseudo_negative

        base_observed = observed | pseudo_positive if mpc.correct_base else observed
        loss = self.base(logits, base_observed, index)
        components = {"base": loss.detach()}
        if self.strong is not None:
            components["ipc"] = masked_bce(logits_all[size:], target, confident)
            loss = loss + self.ramp(mpc.ipc_weight) * components["ipc"]
        if self.perturb is not None:
            logits_fp = head.classify(head.embed(self.perturb(feature_map[:size])))
            components["fpc"] = masked_bce(logits_fp, target, confident)
            loss = loss + self.ramp(mpc.fpc_weight) * components["fpc"]
        if self.batch_transformer is not None:
            logits_bt = head.classify(self.batch_transformer(embedding[:size]))
            components["btc"] = F.binary_cross_entropy_with_logits(logits_bt.float(), base_observed.float())
            loss = loss + mpc.btc_weight * components["btc"]
        components = {k: v.detach() for k, v in components.items()}
        components["pseudo_pos_rate"] = pseudo_positive.float().mean()
        components["confident_rate"] = confident.float().mean()
        return {"loss": loss, "logits": logits, "components": components, "pseudo_positive": pseudo_positive}
