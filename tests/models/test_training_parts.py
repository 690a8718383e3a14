"""Batch transformer, feature perturbation and EMA."""

import pytest
import torch

from spml.models import Backbone, BatchTransformer, Classifier, FeaturePerturbation, build_ema, build_head
from spml.models.batch_transformer import attention_heads


def classifier(num_classes: int = 3) -> Classifier:
    backbone = Backbone("resnet10t")
    return Classifier(backbone, build_head("linear", backbone.num_features, num_classes))


def test_batch_transformer_mixes_the_batch_in_training():
    torch.manual_seed(0)
    bt = BatchTransformer(dim=12, depth=1, heads=4, dim_feedforward=16, dropout=0.0).train()
    batch = torch.randn(4, 12)
    changed = batch.clone()
    changed[1:] = torch.randn(3, 12)
    out = bt(batch)
    assert out.shape == (4, 12)
    assert not torch.allclose(out[0], bt(changed)[0], atol=1e-4)


def test_batch_transformer_picks_a_head_count_that_divides_the_width():
    assert attention_heads(10, 4) == 2 and attention_heads(7, 4) == 1 and attention_heads(16, 4) == 4
    bt = BatchTransformer(dim=10, heads=4, dim_feedforward=8, dropout=0.0)
    assert bt(torch.randn(3, 10)).shape == (3, 10)


def test_batch_transformer_projects_very_wide_embeddings():
    bt = BatchTransformer(dim=4096, heads=4, dim_feedforward=8, dropout=0.0, width=32)
    assert bt.encoder.layers[0].self_attn.embed_dim == 32
    assert bt(torch.randn(3, 4096)).shape == (3, 4096)


def test_feature_perturbation_is_identity_in_eval_and_drops_channels_in_training():
    torch.manual_seed(0)
    perturb = FeaturePerturbation(dropout=0.5, noise_std=0.1)
    features = torch.rand(4, 16, 3, 3) + 1
    out = perturb.train()(features)
    dropped = (out == 0).all(dim=(2, 3))
    assert dropped.any() and not dropped.all()
    assert not torch.allclose(out[~dropped], features[~dropped] * 2)  # noise on top of the 1/(1-p) rescale
    assert torch.equal(perturb.eval()(features), features)
    assert torch.equal(FeaturePerturbation(0.0, 0.0).train()(features), features)


def test_ema_tracks_stays_frozen_and_round_trips():
    torch.manual_seed(0)
    model = classifier()
    ema = build_ema(model, decay=0.5)
    before = ema.module.head.fc.weight.clone()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    assert torch.allclose(ema.module.head.fc.weight, before + 0.5)
    assert not any(p.requires_grad for p in ema.parameters())
    ema.train()
    assert not ema.module.training
    copy = build_ema(classifier(), decay=0.5)
    copy.load_state_dict(ema.state_dict())
    assert torch.equal(copy.module.head.fc.weight, ema.module.head.fc.weight)
    with pytest.raises(ValueError, match="decay"):
        build_ema(model, 1.0)
