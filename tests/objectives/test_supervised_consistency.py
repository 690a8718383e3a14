"""The supervised consistency objective (the full-label reference with MPC's strong-view stream): the loss it
computes from plain parts, its warm-up and ramp, and the config that selects it."""

import pytest
import torch
from torch import nn

from spml.augment import StrongAugment, WeakAugment
from spml.factories import build_objective, data_stats
from spml.factories.data import build_data
from spml.losses import build_loss
from spml.models import Backbone, Classifier, build_head
from spml.objectives import SupervisedConsistencyObjective, SupervisedObjective

C = 3


class Invert(nn.Module):
    """A deterministic 'strong view': 1 - x."""

    def forward(self, x):
        return 1 - x


def parts():
    torch.manual_seed(0)
    backbone = Backbone("test_efficientnet")
    return Classifier(backbone, build_head("linear", backbone.num_features, C)), build_loss("bce")


def supervised_batch(size: int = 6):
    generator = torch.Generator().manual_seed(0)
    return {
        "image": torch.randint(0, 256, (size, 1, 32, 32), generator=generator, dtype=torch.uint8),
        "targets": torch.randint(0, 2, (size, C), generator=generator).float(),
        "known": torch.rand(size, C, generator=generator) > 0.2,
    }


def test_loss_is_the_weak_term_plus_the_ramped_strong_term():
    classifier, loss = parts()
    identity = WeakAugment(flip_p=0, degrees=0, translate=0, scale=(1.0, 1.0))
    objective = SupervisedConsistencyObjective(
        classifier, loss, identity, Invert(), weight=0.4, warmup_epochs=1.0, rampup_epochs=2.0
    ).eval()  # eval: batch norms are deterministic
    batch = supervised_batch()
    x = batch["image"].float() / 255
    weak = loss(classifier(x), batch["targets"], batch["known"])
    strong = loss(classifier(1 - x), batch["targets"], batch["known"])
    for step, weight in [(2, 0.0), (4, 0.0), (8, 0.2), (100, 0.4)]:  # 4 steps per epoch: warm-up 1, ramp 2
        objective.set_progress(step, 4)
        out = objective(batch)
        torch.testing.assert_close(out["loss"], weak + weight * strong)
        torch.testing.assert_close(out["components"]["strong"], strong.detach())


def test_strong_view_leaves_batch_norm_running_statistics_alone():
    classifier, loss = parts()
    plain = SupervisedObjective(classifier, loss, WeakAugment())
    torch.manual_seed(1)
    plain(supervised_batch())
    expected = {k: v.clone() for k, v in classifier.state_dict().items() if "running" in k}
    classifier_2, _ = parts()
    objective = SupervisedConsistencyObjective(classifier_2, loss, WeakAugment(), Invert())
    torch.manual_seed(1)
    objective(supervised_batch())
    for key, value in classifier_2.state_dict().items():
        if "running" in key:
            torch.testing.assert_close(value, expected[key])


@pytest.mark.parametrize("red", [True, False])
def test_config_selects_it_with_mpc_image_level_settings(tiny_config, red):
    config = tiny_config(
        "supervised",
        "supervised.objective=consistency",
        "spml.mpc.ipc_weight=0.3",
        f"spml.mpc.red={red}",
        "spml.mpc.warmup_epochs=2",
        "spml.mpc.rampup_epochs=3",
    )
    bundle = build_data(config)
    objective = build_objective(config, data_stats(bundle, "supervised"))
    assert isinstance(objective, SupervisedConsistencyObjective) and isinstance(objective.strong, StrongAugment)
    assert (objective.weight, objective.warmup_epochs, objective.rampup_epochs) == (0.3, 2.0, 3.0)
    elastic = [op for op in objective.strong.ops if "Elastic" in type(op).__name__]
    assert bool(elastic) == red
    plain = build_objective(tiny_config("supervised"), data_stats(bundle, "supervised"))
    assert type(plain) is SupervisedObjective
