"""Backbone, heads, classifier: shapes, the embed/classify split, prototype files, batch independence."""
import numpy as np
import pytest
import torch

from spml.config.schema import ModelConfig
from spml.models import Backbone, Classifier, build_classifier, build_head

TINY = ModelConfig(backbone="resnet10t", head_hidden=16, embedding_dim=8)


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return Backbone(TINY).eval()


def test_backbone_gives_a_map_and_its_mean(backbone):
    x = torch.randn(2, 1, 64, 64)
    features = backbone(x)
    assert features.shape == (2, backbone.num_features, 2, 2)
    assert torch.allclose(backbone.pool(features), features.mean((2, 3)), atol=1e-6)


@pytest.mark.parametrize("name", ["test_vit", "test_mambaout"])  # token and NHWC outputs
def test_non_cnn_backbones_give_nchw_maps(name):
    backbone = Backbone(ModelConfig(backbone=name))
    features = backbone(torch.randn(2, 1, 64, 64))
    assert features.ndim == 4 and features.shape[:2] == (2, backbone.num_features)


def test_channels_last_gives_the_same_features():
    torch.manual_seed(0)
    plain = Backbone(TINY).eval()
    fast = Backbone(ModelConfig(backbone="resnet10t", channels_last=True)).eval()
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(2, 1, 32, 32)
    assert fast.model.conv1[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(fast(x), plain(x), atol=1e-5)


@pytest.mark.parametrize("head", ["linear", "mlp", "bilinear", "prototype"])
def test_heads_split_into_embed_and_classify(head):
    torch.manual_seed(0)
    module = build_head(ModelConfig(head=head, head_hidden=16, embedding_dim=8, drop_rate=0.3), 64, 5).eval()
    features = torch.randn(3, 64, 4, 4)
    embedding = module.embed(features)
    assert embedding.shape == (3, module.embed_dim)
    assert torch.equal(module(features), module.classify(embedding))
    assert module(features).shape == (3, 5)


def test_bilinear_embedding_is_unit_norm_and_projects_wide_maps():
    module = build_head(ModelConfig(head="bilinear", head_hidden=8), 2048, 3).eval()
    embedding = module.embed(torch.randn(2, 2048, 3, 3))
    assert embedding.shape == (2, 64)
    assert torch.allclose(embedding.norm(dim=1), torch.ones(2), atol=1e-5)


def test_prototype_logits_are_minus_distances(tmp_path):
    prototypes = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
    np.save(tmp_path / "p.npy", prototypes)
    module = build_head(ModelConfig(head="prototype", embedding_dim=8, prototypes=str(tmp_path / "p.npy")), 16, 4)
    assert torch.equal(module.prototypes.detach(), torch.from_numpy(prototypes))
    v = torch.randn(2, 8)
    expected = -np.linalg.norm(v.numpy()[:, None, :].astype(np.float64) - prototypes[None], axis=2)
    assert np.allclose(module.classify(v).detach().numpy(), expected, atol=1e-5)


def test_prototype_file_is_checked(tmp_path):
    torch.save(torch.zeros(3, 8), tmp_path / "p.pt")
    with pytest.raises(ValueError, match=r"\(4, 8\)"):
        build_head(ModelConfig(head="prototype", embedding_dim=8, prototypes=str(tmp_path / "p.pt")), 16, 4)
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="pickle"):
        build_head(ModelConfig(head="prototype", embedding_dim=8, prototypes=str(tmp_path / "objects.npy")), 16, 4)


def test_unknown_head_names_the_choices():
    with pytest.raises(KeyError, match="bilinear"):
        build_head(ModelConfig(head="nope"), 16, 2)


@pytest.mark.parametrize("head", ["linear", "mlp", "bilinear"])
def test_eval_logits_do_not_depend_on_the_rest_of_the_batch(head):
    torch.manual_seed(0)
    model = build_classifier(ModelConfig(head=head, head_hidden=8), 3).eval()
    image = torch.rand(1, 1, 32, 32)
    first = model(torch.cat([image, torch.rand(2, 1, 32, 32)]))[0]
    second = model(torch.cat([torch.rand(3, 1, 32, 32) * 5, image]))[-1]
    assert torch.allclose(first, second, atol=1e-5)


def test_classifier_routes_through_features():
    torch.manual_seed(0)
    model = build_classifier(TINY, 4).eval()
    assert isinstance(model, Classifier)
    x = torch.rand(2, 1, 32, 32)
    assert torch.equal(model(x), model.logits_from_features(model.features(x)))
