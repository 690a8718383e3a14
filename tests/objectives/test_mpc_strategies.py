"""MPC's strategy objects on their own: thresholds (update separate from the read), targets, consistency and
base terms, and MPCObjective built from plain parts, fakes included."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spml.augment import WeakAugment
from spml.losses import build_loss
from spml.losses.bce import bce
from spml.models import Backbone, Classifier, build_head
from spml.objectives import (
    BASE_TERMS,
    CONSISTENCY,
    TARGETS,
    ClassPriorThresholds,
    GlobalThresholds,
    MPCObjective,
    PseudoLabels,
)

B, C = 6, 3


def test_global_thresholds_are_constant_and_remember_nothing():
    thresholds = GlobalThresholds(0.8, 0.2)
    thresholds.update(torch.rand(B, C), torch.zeros(B, C, dtype=torch.bool))
    assert thresholds() == (0.8, 0.2) and not list(thresholds.buffers())


def test_class_prior_thresholds_read_without_writing_and_match_numpy_quantiles():
    prior, observed_rate = torch.tensor([0.5, 0.2, 0.0]), torch.tensor([0.1, 0.1, 0.0])
    thresholds = ClassPriorThresholds(prior, observed_rate, prior_fraction=0.5, negative_fraction=0.7, memory_size=8)
    assert thresholds()[0].tolist() == [1.0] * C and thresholds()[1].tolist() == [0.0] * C  # empty: nothing marked
    probs = torch.rand(5, C, generator=torch.Generator().manual_seed(0))
    observed = torch.zeros(5, C, dtype=torch.bool)
    observed[0, 1] = True
    thresholds.update(probs, observed)
    state = {k: v.clone() for k, v in thresholds.state_dict().items()}
    positive, negative = thresholds()
    again = thresholds()
    for key, value in thresholds.state_dict().items():  # reading writes nothing
        torch.testing.assert_close(value, state[key], rtol=0, atol=0, equal_nan=True)
    assert torch.equal(positive, again[0]) and torch.equal(negative, again[1])
    hidden = ((prior - observed_rate) / (1 - observed_rate)).clamp(0, 1).numpy()
    for c in range(C):
        kept = probs[:, c][~observed[:, c]].double().numpy()  # observed entries are not remembered
        expected_negative = np.quantile(kept, 0.7 * (1 - hidden[c]))
        expected_positive = max(np.quantile(kept, 1 - 0.5 * hidden[c]), expected_negative + 1e-6)
        assert positive[c].item() == pytest.approx(expected_positive, abs=1e-6)
        assert negative[c].item() == pytest.approx(expected_negative, abs=1e-6)
    thresholds.update(torch.zeros(5, C), torch.zeros(5, C, dtype=torch.bool))  # a ring of 8: rows 5, 6, 7, 0, 1
    assert int(thresholds.memory_cursor) == 2 and torch.isfinite(thresholds.memory_probs).all()
    assert torch.equal(thresholds.memory_probs[2:5], probs[2:5])


def test_class_prior_thresholds_refuse_an_empty_memory():
    with pytest.raises(ValueError, match="memory_size"):
        ClassPriorThresholds(torch.zeros(C), torch.zeros(C), memory_size=0)


def labels_for(probs, observed, active=True, tau=(0.7, 0.3), targets="hard"):
    unobserved = ~observed & active
    positive = (probs >= tau[0]) & unobserved
    negative = (probs <= tau[1]) & unobserved & ~positive
    confident = observed | positive | negative
    target, mask = TARGETS.build(targets)(probs, observed, unobserved, positive, confident)
    return PseudoLabels(positive, target, mask, active)


PROBS = torch.tensor([[0.9, 0.5, 0.1], [0.2, 0.8, 0.4]])
OBSERVED = torch.tensor([[False, False, True], [True, False, False]])


def test_hard_and_soft_targets():
    hard = labels_for(PROBS, OBSERVED)
    assert hard.target.tolist() == [[1, 0, 1], [1, 1, 0]]
    assert hard.mask.tolist() == [[True, False, True], [True, True, False]]
    soft = labels_for(PROBS, OBSERVED, targets="soft")
    assert torch.allclose(soft.target, torch.tensor([[0.9, 0.5, 1.0], [1.0, 0.8, 0.4]]))
    assert soft.mask.all()
    before = labels_for(PROBS, OBSERVED, active=False, targets="soft")
    assert torch.equal(before.mask, OBSERVED) and not before.positive.any()


class RecordingLoss(nn.Module):
    """A fake base loss: remembers what it was called with and whether it was in training mode."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, logits, observed, index):
        self.calls.append((observed.clone(), self.training))
        return logits.sum() * 0 + observed.sum().float()

    def set_epoch(self, epoch):
        self.epoch = epoch


def test_consistency_strategies():
    logits, base = torch.randn(2, C), RecordingLoss()
    labels = labels_for(PROBS, OBSERVED)
    loss = CONSISTENCY.build("base")(logits, labels, base, OBSERVED, torch.arange(2))
    ((seen, training),) = base.calls
    assert loss == (OBSERVED | labels.positive).sum() and torch.equal(seen, OBSERVED | labels.positive)
    assert not training and base.training  # the stream reads the loss's tables, does not record into them
    stream = CONSISTENCY.build("bce")(logits, labels, base, OBSERVED, torch.arange(2))
    expected = F.binary_cross_entropy_with_logits(logits[labels.mask], labels.target[labels.mask])
    assert torch.allclose(stream, expected) and torch.allclose(bce(logits, labels.target, labels.mask), expected)


def test_base_terms():
    logits, index = torch.randn(2, C), torch.arange(2)
    labels = labels_for(PROBS, OBSERVED)
    base = RecordingLoss()
    assert BASE_TERMS.build("loss")(logits, labels, base, OBSERVED, index) == OBSERVED.sum()
    assert BASE_TERMS.build("positives")(logits, labels, base, OBSERVED, index) == (OBSERVED | labels.positive).sum()
    confident = BASE_TERMS.build("confident")
    assert torch.allclose(confident(logits, labels, base, OBSERVED, index), bce(logits, labels.target, labels.mask))
    inactive = labels._replace(active=False)
    assert confident(logits, inactive, base, OBSERVED, index) == OBSERVED.sum()
    assert all(training for _, training in base.calls)  # the base loss always ran in training mode (records)


def tiny_classifier() -> Classifier:
    backbone = Backbone("test_efficientnet")
    return Classifier(backbone, build_head("linear", backbone.num_features, C))


def batch(size: int = 8):
    generator = torch.Generator().manual_seed(0)
    observed = torch.zeros(size, C, dtype=torch.bool)
    observed[torch.arange(size), torch.arange(size) % C] = True
    return {
        "image": torch.randint(0, 256, (size, 1, 32, 32), generator=generator, dtype=torch.uint8),
        "observed": observed,
        "index": torch.arange(size),
    }


def test_mpc_from_plain_parts_follows_warm_up_and_ramp_from_the_progress_it_is_told():
    torch.manual_seed(0)
    base = RecordingLoss()
    objective = MPCObjective(
        tiny_classifier(),
        base,
        WeakAugment(),
        thresholds=GlobalThresholds(0.0, -1.0),
        ipc_weight=0.0,
        fpc_weight=0.0,
        btc_weight=0.0,
        warmup_epochs=1.0,
        rampup_epochs=2.0,
    )
    objective.set_progress(4, 4)  # one epoch done: warm-up just over
    assert objective.epoch == 0 and objective.warmup_over() and objective.ramp(0.5) == 0.0
    out = objective(batch())
    assert out["pseudo_positive"].sum() == (~batch()["observed"]).sum()  # every unobserved entry >= 0.0
    objective.set_progress(3, 4)
    assert not objective(batch())["pseudo_positive"].any() and base.epoch == 0
    objective.set_progress(8, 4)
    assert objective.ramp(0.5) == 0.25 and base.epoch == 1
    objective.set_progress(40, 4)
    assert objective.ramp(0.5) == 0.5
    assert set(out["components"]) == {"base", "pseudo_pos_rate", "confident_rate"}


def test_mpc_streams_and_an_ema_teacher():
    torch.manual_seed(0)
    classifier = tiny_classifier()
    base = build_loss("an", mode="spml", num_classes=C, num_images=8, expected_positives=1.0)
    objective = MPCObjective(
        classifier,
        base,
        WeakAugment(),
        strong=WeakAugment(degrees=20),
        perturb=nn.Dropout2d(0.5),
        batch_transformer=nn.Identity(),
        teacher_decay=0.5,
    )
    objective.set_progress(100, 4)
    out = objective(batch())
    assert {"ipc", "fpc", "btc"} <= set(out["components"]) and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert objective.teacher is not None and not any(p.requires_grad for p in objective.teacher.parameters())
    with torch.no_grad():
        for p in classifier.parameters():
            p.add_(1.0)
    before = [p.clone() for p in objective.teacher.module.parameters()]
    objective.after_optimizer_step()
    assert all(torch.allclose(t, b + 0.5, atol=1e-6) for t, b in zip(objective.teacher.module.parameters(), before))
    with pytest.raises(ValueError, match="decay"):
        MPCObjective(classifier, base, WeakAugment(), teacher_decay=0.0)


def test_btc_own_classifier_trains_alone_and_stays_out_of_the_classifier():
    """BatchFormer-style stream with its own classifier: BTC's gradient reaches the batch head and the backbone, never
    the classifier's head, and the batch head is not part of what evaluation scores."""
    torch.manual_seed(0)
    classifier = tiny_classifier()
    dim = classifier.head.embed_dim
    batch_head = nn.Linear(dim, C)
    objective = MPCObjective(
        classifier,
        RecordingLoss(),
        WeakAugment(),
        batch_transformer=nn.Identity(),
        batch_head=batch_head,
        ipc_weight=0.0,
        fpc_weight=0.0,
        btc_weight=1.0,
        consistency=CONSISTENCY.build("bce"),
        warmup_epochs=0.0,
        rampup_epochs=0.0,
    )
    objective.set_progress(4, 4)
    out = objective(batch())
    out["loss"].backward()  # RecordingLoss gives the base term a zero gradient: what remains is BTC's
    assert batch_head.weight.grad is not None and batch_head.weight.grad.abs().sum() > 0
    assert classifier.head.fc.weight.grad is None or classifier.head.fc.weight.grad.abs().sum() == 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in classifier.backbone.parameters())
    assert not any(p is batch_head.weight for p in classifier.parameters())


def test_feature_perturbation_drops_channels_or_single_values():
    from spml.models import FeaturePerturbation

    torch.manual_seed(0)
    features = torch.ones(4, 32, 6, 6)
    channels, values = FeaturePerturbation(0.5).train(), FeaturePerturbation(0.5, channelwise=False).train()
    dropped = channels(features) == 0
    assert torch.equal(dropped, dropped[:, :, :1, :1].expand_as(dropped))  # whole channels
    partly = (values(features) == 0).flatten(2)
    assert (partly.any(2) & ~partly.all(2)).any()  # single values: a channel keeps some of its positions
    assert torch.equal(values.eval()(features), features) and torch.equal(channels.eval()(features), features)
