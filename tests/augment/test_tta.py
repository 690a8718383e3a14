"""Test-time augmentation: views and averaging."""

import pytest
import torch

from spml.augment import TTA_VIEWS, tta_predict


def linear_model(images: torch.Tensor) -> torch.Tensor:
    """Logits from a fixed random linear map of the pixels (not flip-symmetric)."""
    weights = torch.randn(3, images[0].numel(), generator=torch.Generator().manual_seed(0))
    return images.flatten(1) @ weights.T / 10


def symmetric_model(images: torch.Tensor) -> torch.Tensor:
    """Logits of a left-right symmetric function of the image (row means), of moderate size."""
    rows = images.mean(dim=3).flatten(1) - 0.5
    return torch.stack([rows @ torch.linspace(-2, 2, rows.shape[1]), 10 * (rows**2).mean(1)], dim=1)


X = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("average", ["prob", "logit"])
def test_identity_only_equals_the_plain_prediction(average):
    assert torch.allclose(tta_predict(linear_model, X, ("identity",), average), linear_model(X), atol=1e-5)


@pytest.mark.parametrize("average", ["prob", "logit"])
def test_hflip_on_a_symmetric_model_equals_identity(average):
    out = tta_predict(symmetric_model, X, ("identity", "hflip"), average)
    assert torch.allclose(out, symmetric_model(X), atol=1e-5)


def test_prob_average_is_the_mean_probability():
    names = tuple(TTA_VIEWS)
    expected = torch.stack([torch.sigmoid(linear_model(TTA_VIEWS[n](X))) for n in names]).mean(0)
    assert torch.allclose(torch.sigmoid(tta_predict(linear_model, X, names, "prob")), expected, atol=1e-5)


def test_views_are_deterministic_and_change_the_image():
    for name in ("hflip", "scale_up", "shift"):
        view = TTA_VIEWS[name](X)
        assert view.shape == X.shape
        assert torch.equal(view, TTA_VIEWS[name](X)) and not torch.allclose(view, X)
    assert torch.equal(TTA_VIEWS["hflip"](X), X.flip(-1))


def test_bad_names_modes_and_no_views_raise():
    """(The config loader refuses such augment.tta / augment.tta_average values first: tests/test_config_choices.py.)"""
    with pytest.raises(KeyError, match="rotate"):
        tta_predict(linear_model, X, ("rotate",))
    with pytest.raises(KeyError, match="median"):
        tta_predict(linear_model, X, ("identity",), "median")
    with pytest.raises(ValueError, match="at least one view"):
        tta_predict(linear_model, X, ())
