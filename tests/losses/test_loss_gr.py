"""GR Loss (Chen et al. 2024): check values from an independent float64 reference written from the
published formula, the schedule, stop-gradient weights, identities with AN, extreme logits, only `observed`."""

import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from loss_cases import CHECK_OBSERVED, CHECK_P, check_example, make_spml, single_positive

from spml.losses.an import assume_negative
from spml.losses.gr import generalized_robust, gr_soft_label, gr_weight

DEFAULTS = {
    "num_epochs": 8,
    "w": (0.0, 2.0),
    "b": (-2.0, -2.0),
    "mu": (0.5, 0.8),
    "sigma": (2.0, 0.5),
    "q2": 0.01,
    "q3": 1.0,
    "eps": 1e-7,
}


def reference(probs, observed, epoch, num_epochs, w, b, mu, sigma, q2, q3, eps):
    """The formula in plain Python floats: observed -log(p + eps); unobserved v [k (1 - p^q2)/q2 +
    (1 - k)(1 - (1-p)^q3)/q3], k = sigmoid(w p + b), v = exp(-(p - mu)^2 / (2 sigma^2)); parameters
    linear in the epoch (k's at epoch / num_epochs, v's at (epoch + 1) / num_epochs, capped at 1)."""

    def at(pair, fraction):
        return pair[0] + (pair[1] - pair[0]) * min(fraction, 1.0)

    w_, b_ = at(w, epoch / num_epochs), at(b, epoch / num_epochs)
    mu_, sigma_ = at(mu, (epoch + 1) / num_epochs), at(sigma, (epoch + 1) / num_epochs)
    total = 0.0
    for row, row_observed in zip(probs, observed):
        for p, is_observed in zip(row, row_observed):
            if is_observed:
                total += -math.log(p + eps)
                continue
            k = 1 / (1 + math.exp(-(w_ * p + b_)))
            v = math.exp(-((p - mu_) ** 2) / (2 * sigma_**2))
            total += v * (k * (1 - p**q2) / q2 + (1 - k) * (1 - (1 - p) ** q3) / q3)
    return total / sum(len(row) for row in probs)


# REFERENCE.md's example; the numbers are `reference(...)` with the defaults, to 7 decimals.
@pytest.mark.parametrize(
    "epoch, expected", [(0, 0.3383433), (3, 0.3388648), (7, 0.2500174), (8, 0.2518277), (20, 0.2518277)]
)
def test_check_values_on_the_reference_example(epoch, expected):
    logits, _, observed, index = check_example()
    assert abs(reference(CHECK_P, CHECK_OBSERVED, epoch, **DEFAULTS) - expected) < 5e-8
    loss = make_spml("gr", num_classes=3, num_images=2)
    loss.set_epoch(epoch)
    assert abs(loss(logits, observed, index).item() - expected) < 1e-6
    assert abs(loss(logits.float(), observed, index).item() - expected) < 1e-6


def test_other_settings_against_the_reference():
    generator = torch.Generator().manual_seed(3)
    probs = torch.rand(6, 5, generator=generator, dtype=torch.float64) * 0.98 + 0.01
    observed = single_positive(6, 5, seed=2)
    settings = {
        "num_epochs": 5,
        "w": (1.0, -3.0),
        "b": (0.5, -1.0),
        "mu": (0.2, 0.4),
        "sigma": (0.3, 1.5),
        "q2": 0.5,
        "q3": 0.7,
        "eps": 1e-5,
    }
    loss = make_spml("gr", num_classes=5, num_images=6, **settings)
    for epoch in (0, 2, 4):
        loss.set_epoch(epoch)
        expected = reference(probs.tolist(), observed.tolist(), epoch, **settings)
        assert abs(loss(torch.logit(probs), observed, torch.arange(6)).item() - expected) < 1e-12


def test_schedule_follows_the_authors_epochs():
    loss = make_spml("gr", num_classes=3, num_images=2)
    loss.set_epoch(0)  # authors' epoch 1: k's parameters at their start, v's one step in
    assert loss.schedule() == pytest.approx({"w": 0.0, "b": -2.0, "mu": 0.5375, "sigma": 1.8125})
    loss.set_epoch(7)  # the last of 8 epochs: v at its end values, k one step before
    assert loss.schedule() == pytest.approx({"w": 1.75, "b": -2.0, "mu": 0.8, "sigma": 0.5})
    loss.set_epoch(30)  # past the schedule: end values
    assert loss.schedule() == pytest.approx({"w": 2.0, "b": -2.0, "mu": 0.8, "sigma": 0.5})


def test_gradient_treats_soft_labels_and_weights_as_constants():
    logits = 3 * torch.randn(4, 5, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    logits.requires_grad_(True)
    observed = single_positive(4, 5, seed=6)
    loss = make_spml("gr", num_classes=5, num_images=4)
    loss.set_epoch(5)
    (grad,) = torch.autograd.grad(loss(logits, observed, torch.arange(4)), logits)

    now = loss.schedule()
    p = torch.sigmoid(logits)  # the original's way, from probabilities
    k = torch.sigmoid(now["w"] * p + now["b"])
    v = torch.exp(-((p - now["mu"]) ** 2) / (2 * now["sigma"] ** 2))

    def value(k, v):
        return torch.where(observed, -torch.log(p + 1e-7), v * (k * (1 - p**0.01) / 0.01 + (1 - k) * p)).mean()

    (constant_weights,) = torch.autograd.grad(value(k.detach(), v.detach()), logits, retain_graph=True)
    assert torch.allclose(grad, constant_weights, atol=1e-12)
    (differentiated_weights,) = torch.autograd.grad(value(k, v), logits)
    assert not torch.allclose(grad, differentiated_weights, atol=1e-6)


def test_function_gradcheck_with_given_soft_labels_and_weights():
    generator = torch.Generator().manual_seed(8)
    logits = torch.randn(3, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    probs = torch.rand(3, 4, generator=generator, dtype=torch.float64)
    soft_label, weight = gr_soft_label(probs, 1.5, -2.0), gr_weight(probs, 0.7, 0.6)
    observed = single_positive(3, 4, seed=9)
    for q2, q3 in ((0.01, 1.0), (0.0, 0.0), (0.5, 2.0)):
        assert torch.autograd.gradcheck(
            lambda s: generalized_robust(s, observed, soft_label, weight, q2, q3), (logits,)
        )


def test_with_certain_negatives_it_is_assume_negative():
    """k = 0, v = 1 and q3 = 0 (L3 = -log(1 - p)) give AN; k = 1 with q2 = 0 gives -log p everywhere."""
    logits = 4 * torch.randn(5, 4, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    observed = single_positive(5, 4, seed=11)
    zeros, ones = torch.zeros_like(logits), torch.ones_like(logits)
    certain_negatives = generalized_robust(logits, observed, zeros, ones, q2=0.3, q3=0.0, eps=0.0)
    assert torch.allclose(certain_negatives, assume_negative(logits, observed, eps=0.0), atol=1e-12)
    all_positive = generalized_robust(logits, observed, ones, ones, q2=0.0, q3=0.5, eps=0.0)
    assert torch.allclose(all_positive, F.binary_cross_entropy_with_logits(logits, ones), atol=1e-12)


def test_extreme_logits_at_every_stage_are_finite():
    observed = single_positive(4, 4, seed=1)
    signs = torch.tensor([[1.0, -1, 1, -1], [-1, -1, 1, 1], [1, 1, 1, 1], [-1, -1, -1, -1]])
    for epoch in (0, 4, 7, 12):
        loss = make_spml("gr", num_classes=4, num_images=4)
        loss.set_epoch(epoch)
        for logits in (100 * signs, -100 * signs):
            logits = logits.clone().requires_grad_(True)
            value = loss(logits, observed, torch.arange(4))
            value.backward()
            assert torch.isfinite(value) and torch.isfinite(logits.grad).all(), epoch
    # an observed positive at logit -100 costs -log(eps), the original's cap
    assert (
        abs(
            make_spml("gr", num_classes=1, num_images=1, reduction="sum")(
                torch.tensor([[-100.0]]), torch.tensor([[True]]), torch.arange(1)
            ).item()
            - -math.log(1e-7)
        )
        < 1e-4
    )


def test_it_sees_only_the_observed_positives():
    """forward takes no hidden labels, and the loss keeps no state in which batches could leave them."""
    loss = make_spml("gr", num_images=4)
    assert list(inspect.signature(loss.forward).parameters) == ["logits", "observed", "index"]
    loss.train().set_epoch(3)
    loss(torch.randn(4, 4), single_positive(4, 4), torch.arange(4))
    assert list(loss.state_dict()) == [] and list(loss.parameters()) == []


@pytest.mark.parametrize(
    "params, message",
    [
        ({"sigma": (2.0, 0.0)}, "sigma must be > 0"),
        ({"w": (0.0,)}, r"w is a pair \[start, end\]"),
        ({"mu": (0.5, float("nan"))}, "mu is a pair"),
        ({"num_epochs": 0}, "num_epochs is the number of training epochs"),
        ({"num_epochs": 2.5}, "num_epochs"),
        ({"q2": -0.1}, "q2 and q3 must be >= 0"),
    ],
)
def test_bad_parameters_are_named(params, message):
    with pytest.raises(ValueError, match=f"gr: {message}"):
        make_spml("gr", **params)


def test_parameters_from_a_yaml_list_are_accepted():
    loss = make_spml("gr", w=[0, 1], b=[-1, -3], mu=[0.5, 0.5], sigma=[1, 1], num_epochs=4)
    loss.set_epoch(1)
    assert loss.schedule() == pytest.approx({"w": 0.25, "b": -1.5, "mu": 0.5, "sigma": 1.0})
