"""The reduction convention of every public loss function and module (spml/losses/common.py):
"none" is the per-element tensor (masked elements 0, zero gradient), "mean" its sum over the elements that
count, "sum" its sum; plus gradcheck and +/-100 logits of the per-element tensors."""

import inspect

import pytest
import torch
from loss_cases import FULL, SPML, active_spml, check_example, make_full, make_spml, single_positive

from spml.losses.an import assume_negative, observed_only
from spml.losses.asl import asl
from spml.losses.bce import batch_balanced_bce, bce
from spml.losses.common import reduce, with_batch_term
from spml.losses.entropy import entropy_maximisation
from spml.losses.focal import focal
from spml.losses.gr import generalized_robust
from spml.losses.large_loss import large_loss
from spml.losses.metric import dual_weighted_metric
from spml.losses.role import role_loss
from spml.losses.softmax import msml
from spml.losses.zlpr import zlpr

B, C = 5, 4


def inputs(dtype=torch.float64):
    generator = torch.Generator().manual_seed(7)
    logits = 2 * torch.randn(B, C, generator=generator, dtype=dtype)
    targets = torch.tensor([[1.0, 0, 0, 1], [0, 0, 0, 0], [0, 1, 1, 0], [1, 1, 0, 0], [0, 0, 1, 0]], dtype=dtype)
    known = torch.rand(B, C, generator=generator) < 0.7
    known[3] = False  # a row with nothing known
    known[0, 0] = known[1, 1] = True
    observed = single_positive(B, C, seed=3)
    soft = torch.rand(B, C, generator=generator, dtype=dtype)
    weight = torch.rand(B, C, generator=generator, dtype=dtype)
    table = torch.randn(B, C, generator=generator, dtype=dtype)
    return logits, targets, known, observed, soft, weight, table


def rows_with_known(known):
    return known.any(1).sum()


# name -> (loss(logits, reduction) built from inputs(), element shape, number of elements "mean" divides by,
#          mask of the elements' logits that must get no gradient or None)
def function_cases():
    _, targets, known, observed, soft, weight, table = inputs()
    counts = torch.arange(1.0, C + 1)
    soft_target = torch.where(soft < 0.3, soft, float("nan"))
    entry, row, everything = (B, C), (B,), B * C
    return {
        "bce": (lambda s, r: bce(s, targets, known, reduction=r), entry, known.sum(), ~known),
        "bce_pos_weight": (lambda s, r: bce(s, targets, known, counts, r), entry, known.sum(), ~known),
        "batch_balanced_bce": (lambda s, r: batch_balanced_bce(s, targets, known, r), entry, known.sum(), ~known),
        "focal": (lambda s, r: focal(s, targets, known, 2.0, 0.25, r), entry, known.sum(), ~known),
        "asl": (lambda s, r: asl(s, targets, known, 1.0, 4.0, 0.05, r), entry, known.sum(), ~known),
        "zlpr": (lambda s, r: zlpr(s, targets, known, 0.5, r), row, B, ~known),
        "msml": (lambda s, r: msml(s, targets, known, 0.5, r), row, rows_with_known(known), ~known),
        "metric": (
            lambda s, r: dual_weighted_metric(-s.abs() - 0.1, targets, known, 1.0, counts, 0.0, r),
            row,
            B,
            ~known,
        ),
        "assume_negative": (lambda s, r: assume_negative(s, observed, 1e-5, 0.1, 0.5, r), entry, everything, None),
        "observed_only": (lambda s, r: observed_only(s, observed, 1e-5, r), entry, everything, ~observed),
        "entropy_maximisation": (
            lambda s, r: entropy_maximisation(s, observed, 0.1, 1e-5, soft_target, 0.2, r),
            entry,
            everything,
            None,
        ),
        "large_loss_reject": (lambda s, r: large_loss(s, observed, 3, False, r)[0], entry, everything, None),
        "large_loss_correct": (lambda s, r: large_loss(s, observed, 3, True, r)[0], entry, everything, None),
        "role_loss": (lambda s, r: role_loss(s, table, observed, 1.5, 1e-5, r), entry, everything, None),
        "generalized_robust": (
            lambda s, r: generalized_robust(s, observed, soft, weight, 0.01, 1.0, 1e-7, r),
            entry,
            everything,
            None,
        ),
    }


FUNCTIONS = list(function_cases())


@pytest.mark.parametrize("name", FUNCTIONS)
def test_none_mean_sum_identities_and_shapes(name):
    loss, shape, count, _ = function_cases()[name]
    logits = inputs()[0]
    none, mean, total = (loss(logits, r) for r in ("none", "mean", "sum"))
    assert none.shape == shape and mean.ndim == 0 and total.ndim == 0
    assert torch.allclose(mean, none.sum() / count, rtol=1e-12, atol=0)
    assert torch.allclose(total, none.sum(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", [n for n in FUNCTIONS if function_cases()[n][3] is not None])
def test_masked_elements_are_zero_and_get_no_gradient(name):
    loss, shape, _, no_gradient = function_cases()[name]
    logits = inputs()[0].requires_grad_(True)
    none = loss(logits, "none")
    if len(shape) == 2:
        assert torch.all(none[no_gradient] == 0)
    if name == "msml":
        assert none[3] == 0  # the row with nothing known
    upstream = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=none.dtype)
    (none * upstream).sum().backward()
    assert torch.all(logits.grad[no_gradient] == 0) and logits.grad.abs().sum() > 0


# role_loss goes through stop-gradients, checked against its definition in test_loss_single_positive.py.
@pytest.mark.parametrize("name", [n for n in FUNCTIONS if n != "role_loss"])
def test_per_element_gradcheck(name):
    loss = function_cases()[name][0]
    logits = inputs()[0].requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: loss(s, "none"), (logits,))


@pytest.mark.parametrize("name", FUNCTIONS)
def test_per_element_losses_at_extreme_logits_are_finite(name):
    loss = function_cases()[name][0]
    signs = torch.where(torch.rand(B, C, generator=torch.Generator().manual_seed(2)) < 0.5, -1.0, 1.0)
    for logits in (100.0 * signs, -100.0 * signs, torch.full((B, C), 100.0), torch.full((B, C), -100.0)):
        logits = logits.float().requires_grad_(True)
        none = loss(logits, "none")
        none.sum().backward()
        assert torch.isfinite(none).all() and torch.isfinite(logits.grad).all(), name


@pytest.mark.parametrize("name", FUNCTIONS)
def test_unknown_reduction_is_refused(name):
    with pytest.raises(ValueError, match=r"reduction must be one of \['none', 'mean', 'sum'\], got 'avg'"):
        function_cases()[name][0](inputs()[0], "avg")


def test_every_public_loss_function_defaults_to_mean():
    functions = [
        bce,
        batch_balanced_bce,
        focal,
        asl,
        zlpr,
        msml,
        dual_weighted_metric,
        assume_negative,
        observed_only,
        entropy_maximisation,
        large_loss,
        role_loss,
        generalized_robust,
        reduce,
        with_batch_term,
    ]
    for function in functions:
        assert inspect.signature(function).parameters["reduction"].default == "mean", function.__name__
        assert "Shape:" in function.__doc__ or "Returns:" in function.__doc__, function.__name__
        assert "Args:" in function.__doc__, function.__name__


def test_reduce_and_batch_term_helpers():
    values = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    known = torch.tensor([[True, False], [True, True]])
    assert torch.equal(reduce(values, "none", known), torch.tensor([[1.0, 0.0], [3.0, 4.0]]))
    assert reduce(values, "mean", known) == 8 / 3 and reduce(values, "sum", known) == 8
    assert reduce(values, "mean", torch.zeros_like(known)) == 0  # nothing known: 0, not NaN
    term = torch.tensor(0.5)
    assert torch.equal(with_batch_term(values, term, "none"), values + 0.5)
    assert with_batch_term(values, term, "mean") == 3.0 and with_batch_term(values, term, "sum") == 12.0


@pytest.mark.parametrize("key", list(FULL))
def test_full_label_modules_take_a_reduction(key):
    logits, targets, known, *_ = inputs()
    logits = -logits.abs() if key == "metric" else logits
    none, mean, total = (make_full(key, reduction=r)(logits, targets, known) for r in ("none", "mean", "sum"))
    assert torch.equal(mean, make_full(key)(logits, targets, known))  # "mean" is the default
    row_wise = key in ("zlpr", "fzlpr", "msml", "metric")
    assert none.shape == ((B,) if row_wise else (B, C))
    count = rows_with_known(known) if key == "msml" else B if row_wise else known.sum()
    assert torch.allclose(mean, none.sum() / count, rtol=1e-12) and torch.allclose(total, none.sum(), rtol=1e-12)


@pytest.mark.parametrize("name", SPML)
def test_single_positive_modules_take_a_reduction(name):
    logits, *_ = inputs()
    observed, index = single_positive(B, C, seed=4), torch.tensor([0, 2, 3, 5, 7])
    # eval: the tables stay fixed between the calls
    none, mean, total = (
        active_spml(name, reduction=r).eval()(logits, observed, index) for r in ("none", "mean", "sum")
    )
    assert torch.equal(mean, active_spml(name).eval()(logits, observed, index))  # "mean" is the default
    assert none.shape == (B, C)
    assert torch.allclose(mean, none.mean(), rtol=1e-12) and torch.allclose(total, none.sum(), rtol=1e-12)


@pytest.mark.parametrize("key", list(FULL))
def test_full_label_modules_refuse_an_unknown_reduction(key):
    with pytest.raises(ValueError, match="reduction must be one of"):
        make_full(key, reduction="avg")


@pytest.mark.parametrize("name", SPML)
def test_single_positive_modules_refuse_an_unknown_reduction(name):
    with pytest.raises(ValueError, match="reduction must be one of"):
        make_spml(name, reduction="avg")


def test_check_values_through_reduction_none():
    """REFERENCE.md section 1, recomputed from the per-element tensors."""
    logits, targets, observed, _ = check_example()
    assert torch.allclose(
        zlpr(logits, targets, reduction="none"), torch.tensor([0.7985077, 0.6547198], dtype=torch.float64), atol=1e-6
    )
    assert abs(assume_negative(logits, observed, reduction="none").mean().item() - 0.3216479) < 1e-6
    assert (
        abs(assume_negative(logits, observed, label_smoothing=0.1, reduction="none").sum().item() / 6 - 0.4484580)
        < 1e-6
    )
    assert (
        abs(assume_negative(logits, observed, unobserved_weight=0.5, reduction="none").mean().item() - 0.1881973) < 1e-6
    )
    assert abs(entropy_maximisation(logits, observed, reduction="none").mean().item() - 0.0195921) < 1e-6
