"""BoostLU (Kim et al., CVPR 2023) as the `boostlu` head: a hand-computed check value, the identity at boost 1,
only positive class-activation values change, gradients, inference applies it, and the objectives it fits."""

import pytest
import torch

from spml.factories import build_objective, data_stats
from spml.factories.artifact import model_spec
from spml.factories.data import build_data
from spml.models import LinearHead, build_head
from spml.models.artifact import classifier_from_spec, inference_model
from spml.models.heads import BoostLUHead, boost_positive


def hand_head(boost: float) -> BoostLUHead:
    head = BoostLUHead(2, 2, boost=boost)
    with torch.no_grad():
        head.fc.weight.copy_(torch.tensor([[1.0, 1.0], [2.0, -1.0]]))
        head.fc.bias.copy_(torch.tensor([0.0, -0.5]))
    return head


# one image, F = 2 channels at 2 x 1 positions: (1, 0) and (-1, 2)
FEATURES = torch.tensor([[[[1.0], [-1.0]], [[0.0], [2.0]]]])


def test_check_value_by_hand():
    # class 0: maps 1*1+1*0+0 = 1 and -1+2 = 1, both positive -> 5 and 5, mean 5 (unboosted mean 1)
    # class 1: maps 2*1-0-0.5 = 1.5 -> 7.5 and -2-2-0.5 = -4.5 (unchanged), mean 1.5 (unboosted -1.5)
    assert hand_head(5.0)(FEATURES).tolist() == [[5.0, 1.5]]
    assert hand_head(1.0)(FEATURES).tolist() == [[1.0, -1.5]]
    assert hand_head(5.0).class_maps(FEATURES)[0, :, :, 0].tolist() == [[1.0, 1.0], [1.5, -4.5]]


def test_boost_one_is_the_linear_head_with_the_same_weights():
    torch.manual_seed(0)
    linear, boosted = LinearHead(16, 5), BoostLUHead(16, 5, boost=1.0)
    boosted.load_state_dict(linear.state_dict())  # same parameter names: fc.weight, fc.bias
    features = torch.randn(4, 16, 3, 3)
    torch.testing.assert_close(boosted(features), linear(features), rtol=1e-5, atol=1e-6)


def test_only_positive_class_activation_values_change():
    maps = torch.tensor([[-2.0, -0.0, 0.0, 0.5, 3.0]])
    boosted = boost_positive(maps, 4.0)
    assert boosted.tolist() == [[-2.0, 0.0, 0.0, 2.0, 12.0]]
    assert torch.equal(boost_positive(maps, 1.0), maps)


def test_gradcheck_in_float64():
    torch.manual_seed(0)
    head = BoostLUHead(6, 3, boost=3.0).double()
    features = torch.randn(2, 6, 2, 2, dtype=torch.float64, requires_grad=True)
    assert (head.class_maps(features).abs() > 1e-3).all()  # away from the kink at 0, where it is not differentiable
    assert torch.autograd.gradcheck(
        lambda f, w, b: boost_positive(torch.nn.functional.conv2d(f, w[:, :, None, None], b), 3.0).mean((2, 3)),
        (features, head.fc.weight, head.fc.bias),
    )


def test_boost_must_be_positive():
    with pytest.raises(ValueError, match="boost must be > 0"):
        build_head("boostlu", 8, 2, boost=0.0)


def test_the_exported_model_boosts_at_inference_as_in_training(tiny_config):
    """The authors' model applies BoostLU in every forward pass, so the scores at test time are the boosted ones:
    the exported architecture (model.json) carries the boost and reproduces the trained classifier."""
    config = tiny_config("spml", "spml.objective=loss", "loss.name=ll_r", "model.head=boostlu", "model.boost=3")
    bundle = build_data(config)
    objective = build_objective(config, data_stats(bundle, "spml"))
    spec = model_spec(config, bundle.classes)
    assert spec["head"] == {"name": "boostlu", "args": {"boost": 3.0}}
    rebuilt = classifier_from_spec(spec)
    rebuilt.load_state_dict(objective.classifier.state_dict())
    images = torch.stack([torch.as_tensor(bundle.test[i]["image"]) for i in range(4)])
    trained, exported = (inference_model(c, spec).eval() for c in (objective.classifier, rebuilt))
    with torch.no_grad():
        torch.testing.assert_close(exported(images), trained(images))
        unboosted = inference_model(classifier_from_spec({**spec, "head": {"name": "linear", "args": {}}}), spec)
        unboosted.classifier.load_state_dict(objective.classifier.state_dict())
        assert not torch.allclose(unboosted.eval()(images), trained(images))


def test_mpc_refuses_a_head_without_a_pooled_embedding(tiny_config):
    config = tiny_config("spml", "spml.objective=mpc", "model.head=boostlu")
    bundle = build_data(config)
    with pytest.raises(ValueError, match="model.head='boostlu'"):
        build_objective(config, data_stats(bundle, "spml"))
