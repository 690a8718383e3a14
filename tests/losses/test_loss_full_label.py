"""Full-label losses: identities with BCE, brute-force float64 references, masking, separation."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from loss_cases import FULL, make_full

from spml.losses import build_loss
from spml.losses.bce import batch_balanced_bce, bce
from spml.losses.metric import dual_weighted_metric
from spml.losses.softmax import msml
from spml.losses.zlpr import zlpr


def random_case(batch=6, num_classes=4, seed=0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    logits = (2 * torch.randn(batch, num_classes, generator=generator)).to(dtype)
    targets = (torch.rand(batch, num_classes, generator=generator) < 0.4).to(dtype)
    targets[0] = 0  # a "No Finding" row
    known = torch.rand(batch, num_classes, generator=generator) < 0.75
    return logits, targets, known


def test_focal_with_gamma_zero_and_no_alpha_is_bce():
    logits, targets, _ = random_case()
    focal = build_loss("focal", {"gamma": 0.0, "alpha": None})
    assert torch.allclose(focal(logits, targets), F.binary_cross_entropy_with_logits(logits, targets), atol=1e-7)


def test_asl_without_focusing_or_clip_is_bce():
    logits, targets, _ = random_case()
    asl = build_loss("asl", {"gamma_pos": 0.0, "gamma_neg": 0.0, "clip": 0.0})
    assert torch.allclose(asl(logits, targets), F.binary_cross_entropy_with_logits(logits, targets), atol=1e-7)


def test_asl_against_its_definition_in_float64():
    logits, targets, _ = random_case(dtype=torch.float64)
    p = torch.sigmoid(logits)
    shifted = (p - 0.05).clamp(min=0)
    expected = -(targets * (1 - p) ** 1 * torch.log(p) + (1 - targets) * shifted**4 * torch.log(1 - shifted))
    asl = build_loss("asl", {"gamma_pos": 1.0, "gamma_neg": 4.0, "clip": 0.05})
    assert torch.allclose(asl(logits, targets), expected.mean(), atol=1e-12)


def test_focal_against_its_definition_in_float64():
    logits, targets, _ = random_case(dtype=torch.float64)
    p = torch.sigmoid(logits)
    p_t = torch.where(targets > 0.5, p, 1 - p)
    alpha_t = torch.where(targets > 0.5, 0.25, 0.75)
    expected = (-alpha_t * (1 - p_t) ** 2 * torch.log(p_t)).mean()
    assert torch.allclose(build_loss("focal", {"gamma": 2.0, "alpha": 0.25})(logits, targets), expected, atol=1e-12)


def test_focal_zlpr_at_temperature_one_is_zlpr():
    logits, targets, known = random_case()
    fzlpr = build_loss("fzlpr", {"temperature": 1.0})
    assert torch.equal(fzlpr(logits, targets, known), build_loss("zlpr", {})(logits, targets, known))


def test_zlpr_temperature_scaling_option():
    logits, targets, _ = random_case()
    plain = build_loss("fzlpr", {"temperature": 0.2})(logits, targets)
    scaled = build_loss("fzlpr", {"temperature": 0.2, "scale_by_temperature": True})(logits, targets)
    assert torch.allclose(scaled, 0.2 * plain)
    assert torch.allclose(plain, zlpr(logits / 0.2, targets))


def test_zlpr_against_brute_force_float64():
    logits, targets, known = random_case(dtype=torch.float64)
    rows = []
    for s, y, k in zip(logits.tolist(), targets.tolist(), known.tolist()):
        neg = sum(math.exp(v) for v, t, m in zip(s, y, k) if m and t == 0)
        pos = sum(math.exp(-v) for v, t, m in zip(s, y, k) if m and t == 1)
        rows.append(math.log(1 + neg) + math.log(1 + pos))
    per_row = zlpr(logits, targets, known, reduction="none")
    assert torch.allclose(per_row, torch.tensor(rows, dtype=torch.float64), atol=1e-12)


def test_weighted_bce_with_equal_counts_is_bce():
    logits, targets, known = random_case()
    per_class = build_loss("weighted_bce", {"weighting": "class"}, pos_counts=torch.full((4,), 20.0), num_samples=40)
    assert torch.allclose(per_class(logits, targets, known), bce(logits, targets, known), atol=1e-7)
    balanced = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])  # |P| = |N|: beta_P = beta_N = 2
    logits = torch.randn(4, 2)
    assert torch.allclose(batch_balanced_bce(logits, balanced), 2 * bce(logits, balanced), atol=1e-7)


def test_weighted_bce_against_definitions():
    logits, targets, known = random_case(dtype=torch.float64)
    entries = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    pos, neg = known & (targets > 0.5), known & (targets < 0.5)
    n = known.sum()
    wang = (n / pos.sum() * entries[pos].sum() + n / neg.sum() * entries[neg].sum()) / n
    assert torch.allclose(batch_balanced_bce(logits, targets, known), wang)
    counts = torch.tensor([4.0, 10.0, 0.0, 30.0])
    loss = build_loss("weighted_bce", {"weighting": "class"}, pos_counts=counts, num_samples=40)
    pos_weight = torch.tensor([36 / 4, 30 / 10, 39 / 1, 10 / 30], dtype=torch.float64)  # P_c = 0 counts as 1
    weighted = torch.where(targets > 0.5, pos_weight * -F.logsigmoid(logits), -F.logsigmoid(-logits))
    assert torch.allclose(loss(logits, targets, known), weighted[known].mean())


def msml_reference(logits, targets, known, bce_weight):
    """Brute-force loops in float64 over rows and (positive, negative) sets."""
    total, rows = 0.0, 0
    for s, y, k in zip(logits.tolist(), targets.tolist(), known.tolist()):
        pos = [v for v, t, m in zip(s, y, k) if m and t == 1]
        neg = [v for v, t, m in zip(s, y, k) if m and t == 0]
        if not pos and not neg:
            continue
        rows += 1
        if pos:
            lse = math.log(sum(math.exp(v) for v in neg)) if neg else None
            total += sum(0.0 if lse is None else math.log1p(math.exp(lse - v)) for v in pos) / len(pos)
        else:
            total += bce_weight * sum(math.log1p(math.exp(v)) for v in neg) / len(neg)
    return total / max(rows, 1)


def test_msml_against_brute_force_float64():
    logits, targets, known = random_case(batch=8, num_classes=5, seed=3, dtype=torch.float64)
    known[1] = False  # a row with nothing known
    targets[2], known[2] = 1.0, True  # a row without negatives
    for weight in (0.0, 0.7):
        expected = msml_reference(logits, targets, known, weight)
        assert abs(msml(logits, targets, known, weight).item() - expected) < 1e-12


def test_metric_loss_against_brute_force_float64():
    generator = torch.Generator().manual_seed(4)
    distance = 2 * torch.rand(5, 3, generator=generator, dtype=torch.float64)
    targets = (torch.rand(5, 3, generator=generator) < 0.4).double()
    known = torch.rand(5, 3, generator=generator) < 0.8
    counts = torch.tensor([2.0, 8.0, 5.0])
    loss = build_loss("metric", {"margin": 1.2, "hardness": 2.0}, pos_counts=counts)
    inverse = [1 / 2, 1 / 8, 1 / 5]
    class_weight = [w / (sum(inverse) / 3) for w in inverse]
    per_image = []
    for d, y, k in zip(distance.tolist(), targets.tolist(), known.tolist()):
        per_image.append(
            sum(w * (dc if yc else max(0.0, 1.2 - dc)) for dc, yc, kc, w in zip(d, y, k, class_weight) if kc)
        )
    hard = [h**2 for h in per_image]
    expected = sum(h * 5 * w / sum(hard) for h, w in zip(per_image, hard)) / 5
    assert abs(loss(-distance, targets, known).item() - expected) < 1e-7  # class weights are a float32 buffer
    assert torch.allclose(
        dual_weighted_metric(-distance, targets, hardness=0.0),
        torch.where(targets > 0.5, distance, (1.0 - distance).clamp(min=0)).sum(1).mean(),
    )


@pytest.mark.parametrize("key", list(FULL))
def test_masked_entries_have_no_loss_and_no_gradient(key):
    loss_fn = make_full(key)
    logits, targets, known = random_case(seed=5)
    if key == "metric":
        logits = -logits.abs()
    logits.requires_grad_(True)
    loss = loss_fn(logits, targets, known)
    loss.backward()
    assert torch.all(logits.grad[~known] == 0)
    assert logits.grad[known].abs().sum() > 0
    changed_logits = torch.where(known, logits.detach(), -logits.detach() * 3 - 1)
    changed_targets = torch.where(known, targets, 1 - targets)
    assert torch.allclose(loss_fn(changed_logits, changed_targets, known), loss.detach(), rtol=1e-6, atol=0)


@pytest.mark.parametrize("key", list(FULL))
def test_nothing_known_gives_zero(key):
    logits, targets, known = random_case()
    assert make_full(key)(logits, targets, torch.zeros_like(known)).abs() < 1e-7


@pytest.mark.parametrize("key", list(FULL))
def test_perfectly_separated_logits_give_near_zero_loss(key):
    targets = torch.tensor([[1.0, 0, 0, 1], [0, 0, 0, 0], [0, 1, 1, 1], [1, 0, 0, 0]])
    if key == "metric":  # logits = -distance: 0 at positives, beyond the margin at negatives
        logits = torch.where(targets > 0.5, 0.0, -20.0)
    else:
        logits = torch.where(targets > 0.5, 20.0, -20.0)
    assert make_full(key)(logits, targets) < 1e-6
    assert make_full(key)(-logits if key != "metric" else logits - 5 * targets, targets) > 1.0


def test_zlpr_ranks_within_each_row_and_handles_rows_without_positives():
    targets = torch.tensor([[0.0, 0.0, 0.0]])
    logits = torch.tensor([[-3.0, -1.0, -2.0]])
    expected = math.log(1 + sum(math.exp(v) for v in (-3.0, -1.0, -2.0)))
    assert abs(zlpr(logits, targets).item() - expected) < 1e-6


def test_msml_is_not_torch_multilabel_soft_margin():
    logits, targets, _ = random_case(seed=7)
    targets[:, 0] = 1.0
    assert not torch.allclose(msml(logits, targets), F.multilabel_soft_margin_loss(logits, targets))
    shifted = logits + 5.0  # pure ranking on rows with positives: a common shift changes nothing
    assert torch.allclose(msml(logits, targets), msml(shifted, targets), atol=1e-6)


def test_all_pairs_of_losses_are_distinct():
    logits, targets, known = random_case(seed=8)
    logits = -logits.abs()
    values = {key: make_full(key)(logits, targets, known).item() for key in FULL}
    for a, b in itertools.combinations(values, 2):
        assert values[a] != values[b], (a, b)
