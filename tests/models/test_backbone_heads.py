"""Backbone, heads, classifier: shapes, the embed/classify split, prototype files, batch independence."""

import numpy as np
import pytest
import torch

from spml.config import load_config
from spml.factories import build_classifier
from spml.models import HEADS, Backbone, Classifier, build_head

HEAD_ARGS = {
    "linear": lambda k: {},
    "mlp": lambda k: {"hidden": k},
    "bilinear": lambda k: {"channels": k},
    "prototype": lambda k: {"embedding_dim": k},
}  # each head's own width argument


def classifier(head: str = "linear", num_classes: int = 3, hidden: int = 8) -> Classifier:
    """A Classifier from plain arguments, no config."""
    backbone = Backbone("resnet10t")
    return Classifier(backbone, build_head(head, backbone.num_features, num_classes, **HEAD_ARGS[head](hidden)))


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return Backbone("resnet10t").eval()


def test_backbone_gives_a_feature_map(backbone):
    x = torch.randn(2, 1, 64, 64)
    assert backbone(x).shape == (2, backbone.num_features, 2, 2)


@pytest.mark.parametrize("name", ["test_vit", "test_mambaout"])  # token and NHWC outputs
def test_non_cnn_backbones_give_nchw_maps(name):
    backbone = Backbone(name)
    features = backbone(torch.randn(2, 1, 64, 64))
    assert features.ndim == 4 and features.shape[:2] == (2, backbone.num_features)


def test_channels_last_gives_the_same_features():
    torch.manual_seed(0)
    plain = Backbone("resnet10t").eval()
    fast = Backbone("resnet10t", channels_last=True).eval()
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(2, 1, 32, 32)
    assert fast.model.conv1[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(fast(x), plain(x), atol=1e-5)


@pytest.mark.parametrize("head", ["linear", "mlp", "bilinear", "prototype"])
def test_heads_split_into_embed_and_classify(head):
    torch.manual_seed(0)
    module = build_head(head, 64, 5, drop_rate=0.3, **HEAD_ARGS[head](16)).eval()
    features = torch.randn(3, 64, 4, 4)
    embedding = module.embed(features)
    assert embedding.shape == (3, module.embed_dim)
    assert torch.equal(module(features), module.classify(embedding))
    assert module(features).shape == (3, 5)


def test_bilinear_embedding_is_unit_norm_and_projects_wide_maps():
    module = build_head("bilinear", 2048, 3, channels=8).eval()
    embedding = module.embed(torch.randn(2, 2048, 3, 3))
    assert embedding.shape == (2, 64)
    assert torch.allclose(embedding.norm(dim=1), torch.ones(2), atol=1e-5)


def test_prototype_logits_are_minus_distances(tmp_path):
    prototypes = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
    np.save(tmp_path / "p.npy", prototypes)
    module = build_head("prototype", 16, 4, embedding_dim=8, prototypes=str(tmp_path / "p.npy"))
    assert torch.equal(module.prototypes.detach(), torch.from_numpy(prototypes))
    v = torch.randn(2, 8)
    expected = -np.linalg.norm(v.numpy()[:, None, :].astype(np.float64) - prototypes[None], axis=2)
    assert np.allclose(module.classify(v).detach().numpy(), expected, atol=1e-5)


def test_prototype_file_is_checked(tmp_path):
    torch.save(torch.zeros(3, 8), tmp_path / "p.pt")
    with pytest.raises(ValueError, match=r"\(4, 8\)"):
        build_head("prototype", 16, 4, embedding_dim=8, prototypes=str(tmp_path / "p.pt"))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="pickle"):
        build_head("prototype", 16, 4, embedding_dim=8, prototypes=str(tmp_path / "objects.npy"))
    config = load_config([], ["model.head=prototype", "model.embedding_dim=8", f"model.prototypes={tmp_path / 'p.pt'}"])
    with pytest.raises(ValueError, match=r"model.head=prototype: prototype file .*p.pt has shape \(3, 8\)"):
        build_classifier(config, 4)


def test_unknown_head_names_the_choices():
    with pytest.raises(KeyError, match="bilinear"):
        build_head("nope", 16, 2)
    with pytest.raises(KeyError, match=r"model.head: unknown head 'nope'"):
        build_classifier(load_config([], ["model.head=nope"]), 2)


@pytest.mark.parametrize("head", ["linear", "mlp", "bilinear"])
def test_eval_logits_do_not_depend_on_the_rest_of_the_batch(head):
    torch.manual_seed(0)
    model = classifier(head).eval()
    image = torch.rand(1, 1, 32, 32)
    first = model(torch.cat([image, torch.rand(2, 1, 32, 32)]))[0]
    second = model(torch.cat([torch.rand(3, 1, 32, 32) * 5, image]))[-1]
    assert torch.allclose(first, second, atol=1e-5)


def test_classifier_normalises_then_routes_through_features():
    torch.manual_seed(0)
    model = build_classifier(load_config([], ["augment.mean=0.4", "augment.std=0.2"]), 4).eval()
    assert isinstance(model, Classifier)
    x = torch.rand(2, 1, 32, 32)
    assert torch.equal(model(x), model.logits_from_features(model.features(x)))
    assert torch.equal(model.features(x), model.backbone((x - 0.4) / 0.2))


@pytest.mark.parametrize("head", ["linear", "mlp", "bilinear", "prototype"])
def test_the_factory_builds_each_registered_head_from_the_config(head):
    config = load_config(
        [], [f"model.head={head}", "model.head_hidden=8", "model.embedding_dim=6", "model.drop_rate=0.2"]
    )
    model = build_classifier(config, 5)
    assert type(model.head) is HEADS.get(head)
    assert (
        model.head.embed_dim == {"linear": model.backbone.num_features, "mlp": 8, "bilinear": 64, "prototype": 6}[head]
    )
    assert model.head.dropout.p == 0.2
