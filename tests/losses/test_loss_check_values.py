"""Every check value of REFERENCE.md section 1 (computed independently of this code) to 1e-6."""

import pytest
import torch
from loss_cases import check_example, make_spml

from spml.losses import build_loss
from spml.losses.zlpr import zlpr

TOL = 1e-6


def test_zlpr_per_sample_and_mean():
    logits, targets, _, _ = check_example()
    per_row = zlpr(logits, targets, reduction="none")
    assert torch.allclose(per_row, torch.tensor([0.7985077, 0.6547198], dtype=torch.float64), atol=TOL)
    assert abs(build_loss("zlpr", {})(logits, targets).item() - 0.7266137) < TOL
    assert abs(build_loss("zlpr", {})(logits.float(), targets.float()).item() - 0.7266137) < TOL  # fp32 too


def test_focal_zlpr_temperature_half():
    logits, targets, _, _ = check_example()
    assert abs(build_loss("fzlpr", {"temperature": 0.5})(logits, targets).item() - 0.3382417) < TOL


@pytest.mark.parametrize(
    "name, params, expected",
    [
        ("an", {}, 0.3216479),
        ("an", {"eps": 0.0}, 0.3216623),
        ("an_ls", {"ls": 0.1}, 0.4484580),
        ("wan", {}, 0.1881973),
        ("epr", {"expected_positives": 1.5}, 0.0550245),
        ("em", {"alpha": 0.1}, 0.0195921),
    ],
)
def test_single_positive_baselines(name, params, expected):
    logits, _, observed, index = check_example()
    loss = make_spml(name, num_classes=3, num_images=2, **params)
    assert abs(loss(logits, observed, index).item() - expected) < TOL
    assert abs(loss(logits.float(), observed, index).item() - expected) < TOL


def test_em_apl_with_the_stated_soft_negatives():
    logits, _, observed, index = check_example()
    loss = make_spml("em_apl", num_classes=3, num_images=2, alpha=0.1, beta=0.2)
    loss.soft_target[0, 1], loss.soft_target[1, 2] = 0.3, 0.05
    assert abs(loss(logits, observed, index).item() - 0.0618233) < TOL


@pytest.mark.parametrize(
    "name, delta, expected", [("ll_r", 0.005, 0.1689472), ("ll_ct", 0.002, 0.2540848), ("ll_cp", 0.001, 0.2540848)]
)
def test_large_loss_first_and_second_epoch(name, delta, expected):
    logits, _, observed, index = check_example()
    loss = make_spml(name, num_classes=3, num_images=2, delta=delta)
    loss.set_epoch(0)  # the paper's epoch 1: plain AN with exact BCE
    assert abs(loss(logits, observed, index).item() - 0.3216623) < TOL
    assert not getattr(loss, "flipped", torch.zeros(1)).any()
    loss.set_epoch(1)  # the paper's epoch 2
    assert abs(loss(logits, observed, index).item() - expected) < TOL
