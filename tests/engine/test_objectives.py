"""Objectives: output contract, hidden labels never reach SPML objectives, eval independent of the batch."""

import pytest
import torch

from spml.factories import build_objective, data_stats
from spml.factories.artifact import model_spec
from spml.factories.data import build_data
from spml.models.artifact import inference_model

MPC_VARIANTS = {
    "mpc_soft_em": ["spml.mpc.targets=soft", "loss.name=em", "spml.mpc.base_after_warmup=loss"],
    "mpc_base_apl": ["spml.mpc.consistency=base", "loss.name=em_apl", "spml.mpc.base_after_warmup=positives"],
    "mpc_bce_confident": [
        "spml.mpc.consistency=bce",
        "loss.name=an",
        "spml.mpc.base_after_warmup=confident",
        "spml.mpc.threshold=global",
        "spml.mpc.teacher=ema",
    ],
    "mpc_bt_own_fp_values": ["spml.mpc.bt_head=own", "spml.mpc.fp_channelwise=false"],
}
LOSS_VARIANTS = {"boostlu": ["loss.name=ll_r", "model.head=boostlu"]}  # single-positive methods beyond a loss name
SPML_METHODS = [
    "mpc",
    *MPC_VARIANTS,
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
    *LOSS_VARIANTS,
]


def first_batch(bundle, size=16):
    items = [bundle.train[i] for i in range(size)]
    return {key: torch.stack([torch.as_tensor(item[key]) for item in items]) for key in items[0]}


@pytest.mark.parametrize("method", SPML_METHODS)
def test_hidden_labels_never_reach_the_spml_objective(tiny_config, method):
    if method in MPC_VARIANTS or method == "mpc":
        overrides = ["spml.objective=mpc", *MPC_VARIANTS.get(method, [])]
    else:
        overrides = ["spml.objective=loss", *LOSS_VARIANTS.get(method, [f"loss.name={method}"])]
    config = tiny_config("spml", *overrides)
    bundle = build_data(config)
    torch.manual_seed(0)
    objective = build_objective(config, data_stats(bundle, "spml"))
    objective.set_progress(8, 4)  # past warm-up (2 epochs done): pseudo-labels and epoch-dependent baselines active
    batch = first_batch(bundle)
    assert batch["observed"].any(1).all(), "every SPML training row has one observed positive"
    state = {k: v.clone() for k, v in objective.state_dict().items()}
    torch.manual_seed(1)
    out = objective(batch)
    assert set(out) >= {"loss", "logits", "components"} and out["loss"].ndim == 0
    assert torch.isfinite(out["loss"])
    shuffled = dict(batch)
    shuffled["targets"] = batch["targets"][torch.randperm(len(batch["targets"]))].flip(1)
    shuffled["known"] = ~batch["known"]
    objective.load_state_dict(state)
    torch.manual_seed(1)
    assert torch.equal(objective(shuffled)["loss"], out["loss"])


def test_supervised_objective_uses_targets_and_known(tiny_config):
    config = tiny_config("supervised")
    bundle = build_data(config)
    objective = build_objective(config, data_stats(bundle, "supervised"))
    batch = first_batch(bundle)
    torch.manual_seed(0)
    a = objective(batch)["loss"]
    torch.manual_seed(0)
    flipped = dict(batch, targets=1 - batch["targets"])
    assert not torch.equal(objective(flipped)["loss"], a)
    torch.manual_seed(0)
    nothing_known = dict(batch, known=torch.zeros_like(batch["known"]))
    assert objective(nothing_known)["loss"].abs() < 1e-6


def test_mpc_components_switch_off(tiny_config):
    config = tiny_config("spml", "spml.mpc.ipc_weight=0", "spml.mpc.fpc_weight=0", "spml.mpc.btc_weight=0")
    bundle = build_data(config)
    objective = build_objective(config, data_stats(bundle, "spml"))
    assert objective.strong is None and objective.perturb is None and objective.batch_transformer is None
    out = objective(first_batch(bundle))
    assert set(out["components"]) == {"base", "pseudo_pos_rate", "confident_rate"}


def test_base_consistency_streams_leave_the_loss_tables_to_the_weak_view(tiny_config):
    """With consistency=base the strong/perturbed/batch streams use EM+APL's tables but only the weak
    view's probabilities are recorded in them."""
    config = tiny_config("spml", "spml.mpc.consistency=base", "loss.name=em_apl", "spml.mpc.base_after_warmup=loss")
    bundle = build_data(config)
    objective = build_objective(config, data_stats(bundle, "spml"))
    objective.set_progress(5, 4)
    batch = first_batch(bundle)
    out = objective(batch)
    assert {"ipc", "fpc", "btc"} <= set(out["components"])
    recorded = objective.base.recorded_probs[batch["index"]]
    assert torch.allclose(recorded, torch.sigmoid(out["logits"].detach().float()))
    assert objective.base.training


@pytest.mark.parametrize("tta", [False, True])
def test_eval_logits_do_not_depend_on_the_batch(tiny_config, tta):
    config = tiny_config("spml")
    bundle = build_data(config)
    objective = build_objective(config, data_stats(bundle, "spml"))
    model = inference_model(objective.classifier, model_spec(config, bundle.classes), tta=tta).eval()
    batch = first_batch(bundle)
    with torch.no_grad():
        alone = model(batch["image"][:1])
        together = model(batch["image"])[:1]
        other = model(torch.cat([batch["image"][:1], batch["image"][8:]]))[:1]
    assert torch.allclose(alone, together, atol=1e-5) and torch.allclose(alone, other, atol=1e-5)


def test_epoch_sampler_is_a_seeded_permutation_per_epoch():
    from spml.data.loader import EpochSampler

    sampler = EpochSampler(40, seed=3)
    first = list(sampler)
    assert sorted(first) == list(range(40)) and list(sampler) == first
    sampler.set_epoch(1)
    assert list(sampler) != first
    sampler.set_epoch(0)
    assert list(sampler) == first
