"""Registries and builders: duplicates, unknown names, bad parameters, context arguments."""

import pytest
import torch

from spml.losses import LOSSES, SPML_LOSSES, build_loss

CONTEXT = {"num_classes": 3, "num_images": 5, "expected_positives": 1.2}


def test_every_family_is_registered():
    assert set(LOSSES.names()) == {"bce", "weighted_bce", "focal", "asl", "zlpr", "fzlpr", "msml", "metric"}
    assert set(SPML_LOSSES.names()) == {
        "an",
        "an_ls",
        "wan",
        "epr",
        "role",
        "em",
        "em_apl",
        "ll_r",
        "ll_ct",
        "ll_cp",
        "gr",
    }


@pytest.mark.parametrize("registry, name", [(LOSSES, "bce"), (SPML_LOSSES, "an")])
def test_duplicate_names_raise(registry, name):
    with pytest.raises(KeyError, match="registered twice"):
        registry.register(name)(object)


def test_unknown_name_lists_the_options():
    with pytest.raises(KeyError, match="zlpr") as err:
        build_loss("zlrp", {})
    assert "'zlrp'" in str(err.value)
    with pytest.raises(KeyError, match="ll_cp"):
        build_loss("ll", {}, mode="spml", **CONTEXT)


def test_bad_parameter_names_the_loss_and_the_parameter():
    with pytest.raises(TypeError, match=r"'focal'.*gama.*accepted: \['alpha', 'gamma', 'reduction'\]"):
        build_loss("focal", {"gama": 2.0})
    with pytest.raises(TypeError, match=r"'epr'.*'k'"):
        build_loss("epr", {"k": 1.5}, mode="spml", **CONTEXT)
    with pytest.raises(ValueError, match="weighted_bce.*pos_counts"):
        build_loss("weighted_bce", {"weighting": "class"})
    with pytest.raises(ValueError, match="weighting"):
        build_loss("weighted_bce", {"weighting": "sample"})


def test_context_arguments_reach_only_the_losses_that_take_them():
    assert build_loss("epr", {}, mode="spml", **CONTEXT).expected_positives == 1.2
    assert (
        build_loss("epr", {"expected_positives": 2.0}, mode="spml", **CONTEXT).expected_positives == 2.0
    )  # params win
    assert build_loss("role", {}, mode="spml", **CONTEXT).table.shape == (5, 3)
    assert build_loss("ll_cp", {}, mode="spml", **CONTEXT).flipped.shape == (5, 3)
    loss = build_loss("weighted_bce", {"weighting": "class"}, pos_counts=[1, 4], num_samples=5)
    assert torch.allclose(loss.pos_weight, torch.tensor([4.0, 0.25]))
    assert build_loss("bce", {}, pos_counts=torch.ones(2), num_samples=3) is not None
