"""Numerics of every registered loss: float64 gradcheck, extreme logits, bf16 autocast (fp32 output)."""

import pytest
import torch
from loss_cases import FULL, SPML, active_spml, make_full, single_positive
from torch import nn


def full_inputs(dtype=torch.float64, batch=3, num_classes=4, key=""):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(batch, num_classes, generator=generator, dtype=dtype)
    if key == "metric":  # logits = -distance, kept away from 0 and the margin kink
        logits = -(0.1 + 0.6 * torch.rand(batch, num_classes, generator=generator, dtype=dtype))
        logits[:, ::2] -= 1.0
    targets = torch.tensor([[1.0, 0, 0, 1], [0, 0, 0, 0], [0, 1, 1, 0]], dtype=dtype)[:batch]
    known = torch.ones(batch, num_classes, dtype=torch.bool)
    known[0, 2] = known[2, 3] = False
    return logits, targets, known


@pytest.mark.parametrize("key", list(FULL))
def test_full_label_gradcheck(key):
    logits, targets, known = full_inputs(key=key)
    loss = make_full(key).double()
    if key == "metric":
        loss.hardness = 0.0  # the hardness image weight is a stop-gradient weight: checked in test_loss_full_label
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: loss(s, targets, known), (logits,))


# ROLE's and GR's gradients go through stop-gradients (numerical differences cannot see them): they are
# checked against their definitions in test_loss_single_positive.py and test_loss_gr.py instead.
@pytest.mark.parametrize("name", [name for name in SPML if name not in ("role", "gr")])
def test_single_positive_gradcheck(name):
    logits, _, _ = full_inputs()
    observed, index = single_positive(3, 4), torch.tensor([1, 2, 5])
    loss = active_spml(name).double().eval()  # eval: tables stay fixed between gradcheck's evaluations
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: loss(s, observed, index), (logits,))


def extreme_logits(batch=4, num_classes=4):
    signs = torch.tensor([[1.0, -1, 1, -1], [-1, -1, 1, 1], [1, 1, 1, 1], [-1, -1, -1, -1]])
    return 100.0 * signs[:batch, :num_classes]


@pytest.mark.parametrize("key", list(FULL))
def test_full_label_extreme_logits_are_finite(key):
    targets = torch.tensor([[1.0, 1, 0, 0], [0, 0, 0, 0], [1, 0, 1, 0], [0, 1, 0, 1]])
    for logits in (extreme_logits(), -extreme_logits()):
        logits.requires_grad_(True)
        value = make_full(key)(logits, targets, None)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(logits.grad).all(), key


@pytest.mark.parametrize("name", SPML)
def test_single_positive_extreme_logits_are_finite(name):
    observed, index = single_positive(4, 4, seed=1), torch.arange(4)
    for logits in (extreme_logits(), -extreme_logits()):
        logits.requires_grad_(True)
        value = active_spml(name)(logits, observed, index)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(logits.grad).all(), name


def bf16_logits(seed=0):
    torch.manual_seed(seed)
    layer = nn.Linear(8, 4)
    features = 3 * torch.randn(6, 8)
    return layer, features


@pytest.mark.parametrize("key", list(FULL))
def test_full_label_under_bf16_autocast(key):
    layer, features = bf16_logits()
    targets = (torch.rand(6, 4, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    loss = make_full(key)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = layer(features)
        logits = -logits.abs() if key == "metric" else logits
        value = loss(logits, targets, None)
    assert logits.dtype == torch.bfloat16 and value.dtype == torch.float32
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(layer.weight.grad).all()
    reference = loss(logits.detach().float(), targets, None)  # same numbers once cast: only the cast differs
    assert torch.allclose(value.detach(), reference, rtol=1e-5)


@pytest.mark.parametrize("name", SPML)
def test_single_positive_under_bf16_autocast(name):
    layer, features = bf16_logits()
    observed, index = single_positive(6, 4), torch.arange(6)
    loss = active_spml(name)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = layer(features)
        value = loss(logits, observed, index)
    assert logits.dtype == torch.bfloat16 and value.dtype == torch.float32
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(layer.weight.grad).all()
