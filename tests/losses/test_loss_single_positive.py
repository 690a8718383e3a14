"""Single-positive losses: identities, epoch schedules, stateful tables and their checkpoints."""

import math

import pytest
import torch
import torch.nn.functional as F
from loss_cases import SPML, check_example, make_spml, single_positive

from spml.engine.optim import parameter_groups
from spml.losses.large_loss import large_loss


def random_batch(batch=6, num_classes=4, seed=0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    logits = (2 * torch.randn(batch, num_classes, generator=generator)).to(dtype)
    return logits, single_positive(batch, num_classes, seed), torch.arange(batch)


def test_assume_negative_is_bce_on_observed_or_zero_targets():
    logits, observed, index = random_batch()
    exact = make_spml("an", eps=0.0)(logits, observed, index)
    assert torch.allclose(exact, F.binary_cross_entropy_with_logits(logits, observed.float()), atol=1e-7)
    with_eps = make_spml("an")(logits, observed, index)
    p = torch.sigmoid(logits.double())
    reference = torch.where(observed, -torch.log(p + 1e-5), -torch.log(1 - p + 1e-5)).mean()
    assert torch.allclose(with_eps.double(), reference, atol=1e-6)


def test_wan_and_epr_against_their_definitions():
    logits, observed, index = random_batch(dtype=torch.float64)
    p = torch.sigmoid(logits)
    wan = torch.where(observed, -torch.log(p + 1e-5), -torch.log(1 - p + 1e-5) / 3).mean()
    assert torch.allclose(make_spml("wan")(logits, observed, index), wan)
    epr = torch.where(observed, -torch.log(p + 1e-5), 0.0).mean() + (p.sum(1).mean() - 2.5) ** 2 / 16
    assert torch.allclose(make_spml("epr", expected_positives=2.5)(logits, observed, index), epr)


def test_em_apl_before_any_soft_negative_is_em():
    logits, observed, index = random_batch()
    em_apl = make_spml("em_apl")
    assert torch.equal(em_apl(logits, observed, index), make_spml("em")(logits, observed, index))


def test_em_apl_marks_lowest_recorded_unobserved_probabilities_per_class():
    num_images = 10
    logits = torch.linspace(-4, 4, num_images)[:, None].repeat(1, 2)
    logits[:, 1] = logits[:, 1].flip(0)
    observed = torch.zeros(num_images, 2, dtype=torch.bool)
    observed[0, 0] = observed[9, 1] = True  # the lowest p of each class is observed: never a soft negative
    observed[5, 1] = True
    loss = make_spml("em_apl", num_classes=2, num_images=num_images, fraction=0.25, warmup_epochs=1)
    loss.train()
    for rows in (torch.arange(0, 5), torch.arange(5, 10)):  # recorded over two batches
        loss(logits[rows], observed[rows], rows)
    p = torch.sigmoid(logits)
    loss.set_epoch(0)  # warm-up: nothing marked
    assert torch.isnan(loss.soft_target).all()
    loss.set_epoch(1)  # floor(0.25 * 9) = 2 per class (class 0) and floor(0.25 * 8) = 2 (class 1)
    marked = torch.isfinite(loss.soft_target)
    assert marked[:, 0].nonzero().flatten().tolist() == [1, 2]
    assert marked[:, 1].nonzero().flatten().tolist() == [7, 8]
    assert torch.allclose(loss.soft_target[marked], p[marked])
    loss.set_epoch(1)  # once per epoch, also when called again on resume
    assert torch.equal(torch.isfinite(loss.soft_target), marked)
    loss.set_epoch(2)  # two more per class, the next lowest
    assert torch.isfinite(loss.soft_target)[:, 0].nonzero().flatten().tolist() == [1, 2, 3, 4]
    assert torch.isfinite(loss.soft_target)[:, 1].nonzero().flatten().tolist() == [4, 6, 7, 8]
    per_class = make_spml("em_apl", num_classes=2, num_images=num_images, fraction=[0.25, 0.0]).train()
    per_class(logits, observed, torch.arange(num_images))
    per_class.set_epoch(1)
    assert torch.isfinite(per_class.soft_target).sum(0).tolist() == [2, 0]


def test_em_apl_stored_targets_come_from_the_previous_epoch_not_the_current_logits():
    logits, _, observed, index = check_example()
    loss = make_spml("em_apl", num_classes=3, num_images=2, alpha=0.1, beta=0.2)
    loss.soft_target[0, 1], loss.soft_target[1, 2] = 0.3, 0.05
    before = loss(logits, observed, index)
    loss.train()
    loss(logits + 1, observed, index)  # records new p, leaves soft targets alone
    assert torch.equal(loss(logits, observed, index), before)


def test_large_loss_never_selects_observed_positives():
    logits = torch.tensor([[-9.0, 0.0, 1.0], [2.0, -8.0, -1.0]])  # observed entries have the largest losses
    observed = torch.tensor([[True, False, False], [False, True, False]])
    loss, selected = large_loss(logits, observed, k=2, correct=False)
    assert selected.tolist() == [[False, False, True], [True, False, False]]
    kept = F.binary_cross_entropy_with_logits(logits, observed.float(), reduction="none")[~selected]
    assert torch.allclose(loss, kept.sum() / 6)
    _, selected = large_loss(logits, observed, k=100, correct=True)  # k beyond the unobserved count
    assert torch.equal(selected, ~observed)


def test_large_loss_rejected_entries_get_no_gradient():
    logits = torch.randn(4, 5, generator=torch.Generator().manual_seed(3), requires_grad=True)
    observed = single_positive(4, 5, seed=3)
    loss, selected = large_loss(logits, observed, k=4, correct=False, reduction="none")
    assert selected.sum() == 4 and torch.all(loss[selected] == 0)
    loss.sum().backward()
    assert torch.all(logits.grad[selected] == 0) and torch.all(logits.grad[~selected] != 0)


@pytest.mark.parametrize(
    "name, delta, epoch, expected",
    [("ll_r", 0.1, 2, 6), ("ll_r", 0.1, 20, 30), ("ll_ct", 0.01, 1, 1), ("ll_cp", 0.1, 5, 3), ("ll_r", 0.1, 0, 0)],
)
def test_large_loss_schedule(name, delta, epoch, expected):
    loss = make_spml(name, delta=delta)
    loss.set_epoch(epoch)
    assert loss.num_selected(30) == expected  # 30 * 0.2 is 6.000000000000001 in floats: still 6


def test_ll_cp_flips_are_permanent():
    logits, _, observed, index = check_example()
    loss = make_spml("ll_cp", num_classes=3, num_images=2, delta=0.001)
    loss.train().set_epoch(1)
    loss(logits, observed, index)
    assert loss.flipped.nonzero().tolist() == [[0, 2]]
    loss.set_epoch(0)  # no new selection, but the flipped entry stays an observed positive
    exact = F.binary_cross_entropy_with_logits(logits, (observed | loss.flipped).double())
    assert torch.allclose(loss(logits, observed, index), exact)
    loss.set_epoch(1)
    loss(logits, observed, index)  # next largest unobserved loss ([1, 0]) is flipped too
    assert loss.flipped.nonzero().tolist() == [[0, 2], [1, 0]]
    loss.eval()(logits, observed, index)  # evaluation never changes the table
    assert loss.flipped.sum() == 2


def test_role_table_is_a_scaled_parameter_trained_only_at_batch_rows():
    loss = make_spml("role", num_classes=4, num_images=8)
    assert isinstance(loss.table, torch.nn.Parameter) and loss.table.shape == (8, 4)
    assert loss.table.lr_multiplier == 10
    assert (torch.sigmoid(loss.table) - 0.5).abs().max() <= 0.1 + 1e-6
    groups = parameter_groups(loss, weight_decay=1e-4)
    assert [g.get("lr_scale") for g in groups] == [10.0] and groups[0]["weight_decay"] == 0
    logits, observed, _ = random_batch(batch=3)
    index = torch.tensor([5, 1, 6])
    logits.requires_grad_(True)
    loss(logits, observed, index).backward()
    rows_with_grad = loss.table.grad.abs().sum(1).nonzero().flatten().tolist()
    assert rows_with_grad == [1, 5, 6] and logits.grad.abs().sum() > 0


def test_role_against_its_definition_with_stop_gradients_in_float64():
    logits, observed, _ = random_batch(batch=3, dtype=torch.float64)
    index = torch.tensor([2, 0, 7])
    loss = make_spml("role", num_classes=4, num_images=8, expected_positives=1.5).double()
    table = loss.table.detach().clone()
    logits.requires_grad_(True)
    value = loss(logits, observed, index)
    grad_logits, grad_table = torch.autograd.grad(value, (logits, loss.table))

    ref_logits, ref_table = logits.detach().clone().requires_grad_(True), table.requires_grad_(True)
    p, g = torch.sigmoid(ref_logits), torch.sigmoid(ref_table[index])

    def nl(x):
        return -torch.log(x + 1e-5)

    obs = torch.where(observed, nl(p) + nl(g), 0.0)
    cross = g.detach() * nl(p) + (1 - g.detach()) * nl(1 - p) + p.detach() * nl(g) + (1 - p.detach()) * nl(1 - g)
    reg = ((p.sum(1).mean() - 1.5) ** 2 + (g.sum(1).mean() - 1.5) ** 2) / 16
    expected = (0.5 * obs + 0.5 * cross).mean() + 0.5 * reg
    assert torch.allclose(value, expected)
    expected.backward()
    assert torch.allclose(grad_logits, ref_logits.grad) and torch.allclose(grad_table, ref_table.grad)


def train_a_little(loss, num_images=8, num_classes=4):
    """Two epochs of updates so every stateful table holds something."""
    logits, observed, _ = random_batch(batch=num_images, num_classes=num_classes, seed=11)
    optimizer = torch.optim.SGD(loss.parameters(), lr=1.0) if list(loss.parameters()) else None
    loss.train()
    for epoch in (0, 1, 2):
        loss.set_epoch(epoch)
        for rows in (torch.arange(0, 4), torch.arange(4, 8)):
            value = loss(logits[rows], observed[rows], rows)
            if optimizer is not None:
                optimizer.zero_grad()
                value.backward()
                optimizer.step()


STATE_PARAMS = {"em_apl": {"fraction": 0.3}, "ll_cp": {"delta": 0.1}}  # tables fill within 8 images


@pytest.mark.parametrize("name", SPML)
def test_state_dict_round_trip_restores_behaviour(name):
    params = STATE_PARAMS.get(name, {})
    trained = make_spml(name, **params)
    train_a_little(trained)
    other_init = {"seed": 1} if name == "role" else {}
    restored = make_spml(name, **params, **other_init)
    restored.load_state_dict(trained.state_dict())
    restored.set_epoch(2)
    logits, observed, index = random_batch(batch=4, seed=12)
    trained.eval(), restored.eval()
    assert torch.equal(restored(logits, observed, index), trained(logits, observed, index))
    if name in ("role", "em_apl", "ll_cp"):
        fresh = make_spml(name, **params, **other_init)
        fresh.set_epoch(2)
        assert not torch.equal(fresh(logits, observed, index), trained(logits, observed, index))


def test_stateful_tables_change_in_training():
    apl, cp = make_spml("em_apl", **STATE_PARAMS["em_apl"]), make_spml("ll_cp", **STATE_PARAMS["ll_cp"])
    train_a_little(apl), train_a_little(cp)
    assert torch.isfinite(apl.soft_target).any() and cp.flipped.any()
    assert not (cp.flipped & single_positive(8, 4, seed=11)).any()


def test_losses_accept_several_observed_positives_per_row():
    logits, _, index = random_batch()
    observed = torch.rand(6, 4, generator=torch.Generator().manual_seed(2)) < 0.5
    for name in SPML:
        loss = make_spml(name)
        loss.set_epoch(1)
        assert torch.isfinite(loss(logits, observed, index)), name


def test_assume_negative_separated_logits():
    observed = single_positive(5, 4)
    logits = torch.where(observed, 20.0, -20.0)
    assert make_spml("an", eps=0.0)(logits, observed, torch.arange(5)) < 1e-6
    assert make_spml("an")(logits, observed, torch.arange(5)) < 2e-5  # eps keeps -log(1 + 1e-5) - ish offsets
    assert make_spml("an")(-logits, observed, torch.arange(5)) > math.log(1e5) / 2


def test_an_ls_smoothing_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match=r"an_ls: ls is a smoothing coefficient in \[0, 1\], got 1.5"):
        make_spml("an_ls", ls=1.5)
