"""Heads of the source papers: gradients reach every parameter and the input, the bilinear head stays
memory-safe on 2048-channel maps, and the MLP head has the Kufel et al. layer order."""

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from spml.models import build_head


class AllocationMeter(TorchDispatchMode):
    """Bytes of every tensor that aten ops produce (forward and backward): `total` (an upper bound of the peak)
    and `largest` (the biggest single tensor)."""

    def __init__(self):
        super().__init__()
        self.total = self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                size = tensor.numel() * tensor.element_size()
                self.total += size
                self.largest = max(self.largest, size)
        return out


@pytest.mark.parametrize("head", ["linear", "mlp", "bilinear", "prototype"])
def test_gradients_reach_every_head_parameter_and_the_features(head):
    torch.manual_seed(0)
    width = {"linear": {}, "mlp": {"hidden": 8}, "bilinear": {"channels": 8}, "prototype": {"embedding_dim": 8}}
    module = build_head(head, 32, 5, drop_rate=0.2, **width[head]).train()
    features = torch.randn(4, 32, 3, 3, requires_grad=True)
    logits = module(features)
    assert logits.shape == (4, 5)
    nn.functional.binary_cross_entropy_with_logits(logits, torch.randint(0, 2, (4, 5)).float()).backward()
    for name, parameter in [("features", features), *module.named_parameters()]:
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_bilinear_head_is_memory_safe_at_2048_channels():
    classes, channels, batch = 14, 2048, 4
    module = build_head("bilinear", channels, classes)  # default projection: 512 channels
    k = module.project[0].out_channels
    parameters = sum(p.numel() for p in module.parameters())
    assert parameters == channels * k + 2 * k + k * k * classes + classes  # 1x1 conv, batch norm, classifier
    full_bilinear_classifier = channels * channels * classes  # what an unprojected 2048^2 embedding would need
    assert parameters < full_bilinear_classifier / 10
    features = torch.randn(batch, channels, 8, 8, requires_grad=True)
    with AllocationMeter() as meter:
        module(features).sum().backward()
    mib = 2**20
    # the largest tensor is the classifier weight (k^2 x C floats = 14 MiB); one unprojected sample's
    # 2048 x 2048 outer product alone would be 16 MiB, its classifier 224 MiB
    assert meter.largest <= k * k * classes * 4
    assert meter.total < 300 * mib


def test_bilinear_embedding_matches_an_independent_float64_reference():
    torch.manual_seed(0)
    module = build_head("bilinear", 10, 3, channels=6).eval()
    features = torch.randn(2, 10, 4, 5)
    z = module.project(features).double().flatten(2)  # (B, k, hw)
    gram = torch.einsum("bip,bjp->bij", z, z) / z.shape[2]
    v = gram.flatten(1)
    v = torch.sign(v) * v.abs().sqrt()
    expected = v / v.norm(dim=1, keepdim=True)
    assert torch.allclose(module.embed(features).double(), expected, atol=1e-5)


def test_mlp_head_is_pool_dense_batchnorm_dropout_classifier():
    module = build_head("mlp", 32, 4, hidden=16, drop_rate=0.3)
    assert [type(layer) for layer in module.hidden] == [nn.Linear, nn.BatchNorm1d, nn.ReLU]
    assert module.dropout.p == 0.3 and module.fc.in_features == 16
