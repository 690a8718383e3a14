"""Heatmaps through captum: Grad-CAM equals the class activation map of a linear head (CAM identity),
each method finds the pixels a known model looks at, the pointing game scores them, overlays are drawn."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spml.evaluation.heatmaps import HEATMAP_METHODS, gallery_figure, heatmaps, overlay_figure
from spml.evaluation.localization import pointing_game
from spml.models import Backbone, Classifier, build_head
from tests.test_plots import assert_png


def test_gradcam_of_a_linear_head_is_the_class_activation_map():
    torch.manual_seed(0)
    backbone = Backbone("resnet10t")
    model = Classifier(backbone, build_head("linear", backbone.num_features, 4)).eval()
    images = torch.rand(3, 1, 64, 64)
    targets = torch.tensor([0, 2, 3])
    maps = heatmaps(model, model.backbone, images, targets, "gradcam")
    with torch.no_grad():
        features = model.features(images)  # (B, F, h, w)
        weights = model.head.fc.weight[targets]  # (B, F)
        # d logit / d A_k(i, j) = W[c, k] / (h w), so Grad-CAM's channel weights are W[c, k] / (h w)
        cam = F.relu((weights[:, :, None, None] * features).sum(1, keepdim=True)) / features[0, 0].numel()
        expected = F.interpolate(cam, size=(64, 64), mode="bilinear")[:, 0]
    assert maps.shape == (3, 64, 64) and maps.dtype == np.float32
    assert np.allclose(maps, expected.numpy(), rtol=1e-4, atol=1e-7)


class RegionModel(nn.Module):
    """A detector per class that sees only its own region: feature map channel c = ReLU(conv(x)) inside
    region c, zero elsewhere (the layer explained); logit c = its mean. The evidence lies in the region."""

    def __init__(self, regions: torch.Tensor):
        super().__init__()
        self.detector = Detector(regions)

    def forward(self, x):
        return self.detector(x).mean((2, 3)) - 0.1


class Detector(nn.Module):
    def __init__(self, regions: torch.Tensor):
        super().__init__()
        self.register_buffer("regions", regions.float()[None])  # (1, C, S, S)
        self.conv = nn.Conv2d(1, regions.shape[0], 3, padding=1)
        with torch.no_grad():  # each channel copies the image
            self.conv.weight.zero_()
            self.conv.weight[:, 0, 1, 1] = 1.0
            self.conv.bias.zero_()

    def forward(self, x):
        return torch.relu(self.conv(x)) * self.regions


@pytest.mark.parametrize("method", HEATMAP_METHODS.names())
def test_each_method_points_into_the_region_the_model_reads(method):
    size = 32
    regions = torch.zeros(2, size, size, dtype=torch.bool)
    regions[0, 4:10, 20:28] = True
    regions[1, 22:30, 3:9] = True
    model = RegionModel(regions).eval()
    images = (torch.rand(6, 1, size, size) * 255).to(torch.uint8)
    targets = np.array([0, 1, 0, 1, 0, 1])
    maps = heatmaps(model, model.detector, images, targets, method)
    assert maps.shape == (6, size, size) and (maps >= 0).all()
    result = pointing_game(maps, regions.numpy()[targets])
    assert result["hit"].all(), method
    floats = heatmaps(model, lambda: model.detector, images.float() / 255, targets, method)  # layer as a function
    assert np.allclose(floats, maps, rtol=1e-4, atol=1e-6)  # uint8 images are read as /255


def test_unknown_method_and_bad_shapes_are_errors():
    model = RegionModel(torch.ones(1, 8, 8)).eval()
    with pytest.raises(KeyError, match="choose from"):
        heatmaps(model, model.detector, torch.zeros(1, 1, 8, 8), [0], "lime")
    with pytest.raises(ValueError, match=r"\(N, 1, S, S\)"):
        heatmaps(model, model.detector, torch.zeros(1, 8, 8), [0])


def test_overlay_and_gallery_pictures(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (32, 32), dtype=np.uint8)
    overlay = overlay_figure(
        image, [("Nodule p=0.9", rng.random((32, 32))), ("Mass p=0.2", np.zeros((32, 32)))], tmp_path / "one.png"
    )
    assert_png(overlay)
    masks = np.zeros((3, 32, 32), bool)
    masks[:, 5:9, 5:9] = True
    gallery = gallery_figure(
        np.stack([image] * 3),
        rng.random((3, 32, 32)),
        ["a", "b", "c"],
        tmp_path / "g.png",
        "Nodule",
        masks,
        np.array([[6, 6], [20, 20], [-1, -1]]),
    )
    assert_png(gallery)
