"""GraSP's sign and a structured budget, each on a case small enough to compute on paper."""

from __future__ import annotations

import torch
from torch import nn

from prunelab.pruning import criteria as C
from prunelab.pruning.budget import build_cost_model, normalized_scores, select_budget
from prunelab.pruning.criteria.at_init import grasp_probe


def test_grasp_removes_the_largest_minus_w_hg_first_by_hand():
    """One linear unit y = w·x, loss ½(y − t)²: g = r x and H = x xᵀ, so Hg = r |x|² x.

    w = (1, −2, 3), x = (1, 1, 1), t = 0: r = 2, |x|² = 3, Hg = (6, 6, 6), w ⊙ Hg = (6, −12, 18).
    The paper's score S = −w ⊙ Hg = (−6, 12, −18); it removes the largest S first: w[1], then
    w[0]. Magnitude would remove w[0] first; a flipped sign would remove w[2] first.
    """
    fc = nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        fc.weight.copy_(torch.tensor([[1.0, -2.0, 3.0]]))
    batch = (torch.ones(1, 3), torch.zeros(1, 1))
    probe = C.Probe(module=fc, params={"w": fc.weight},
                    loss=lambda b: 0.5 * ((fc(b[0]) - b[1]) ** 2).sum(),
                    batches=lambda n: [batch][:n])
    stats = grasp_probe(probe)
    assert torch.allclose(stats["w"]["grad"], torch.tensor([[2.0, 2.0, 2.0]]))
    assert torch.allclose(stats["w"]["hg"], torch.tensor([[6.0, 6.0, 6.0]]))
    score = C.get("grasp").score(fc.weight.detach(), C.ScoreContext(stats=stats["w"]))
    assert torch.allclose(score, torch.tensor([[6.0, -12.0, 18.0]]))  # = −S: lowest goes first
    one = C.compute_masks("grasp", {"w": fc.weight}, 1 / 3, stats=stats)["w"]
    assert torch.equal(one, torch.tensor([[1.0, 0.0, 1.0]]))
    two = C.compute_masks("grasp", {"w": fc.weight}, 2 / 3, stats=stats)["w"]
    assert torch.equal(two, torch.tensor([[0.0, 0.0, 1.0]]))
    # not magnitude's order: that removes w[0] (|1|) first
    mag = C.compute_masks("global_magnitude", {"w": fc.weight}, 1 / 3)["w"]
    assert torch.equal(mag, torch.tensor([[0.0, 1.0, 1.0]]))


class Chain(nn.Module):
    """fc1: 4 → 3 (bias), ReLU, fc2: 3 → 2 (bias). By hand, with k1, k2 units kept:
    MACs = 4·k1 + k1·k2 (fc2's inputs are fc1's units); params = 4·k1 + k1 + k1·k2 + k2."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 3), nn.Linear(3, 2)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def test_budget_cost_and_selection_by_hand():
    cost = build_cost_model(Chain(), torch.randn(1, 4))
    assert cost.macs() == 4 * 3 + 3 * 2 == 18
    assert cost.params() == 4 * 3 + 3 + 3 * 2 + 2 == 23
    assert cost.macs({"fc1": 2, "fc2": 1}) == 4 * 2 + 2 * 1
    assert cost.params({"fc1": 1, "fc2": 1}) == 5 * 1 + 1 * 1 + 1 == 7
    scores = {"fc1": torch.tensor([0.5, 2.0, 1.0]), "fc2": torch.tensor([3.0, 0.8])}
    alive = {n: torch.ones(len(s), dtype=torch.bool) for n, s in scores.items()}
    # MACs ≤ 10, lowest score first: fc1[0] (0.5) → 8 + 4 = 12 > 10; fc2[1] (0.8) → 8 + 2 = 10
    keep, reached, last = select_budget(cost, "macs", 10, scores, alive)
    assert keep["fc1"].tolist() == [False, True, True] and keep["fc2"].tolist() == [True, False]
    assert reached == 10 and last == ("fc2", 1)
    # params ≤ 12: 23 → 16 (fc1[0]) → 13 (fc2[1]) → 7 (fc1[2]); fc2 keeps its last unit
    keep, reached, last = select_budget(cost, "params", 12, scores, alive)
    assert keep["fc1"].tolist() == [False, True, False] and keep["fc2"].tolist() == [True, False]
    assert reached == 7 and last == ("fc1", 2)
    # a unit already removed stays removed and costs nothing: fc1[1] dead → MACs 8 + 4 = 12
    dead = {"fc1": torch.tensor([True, False, True]), "fc2": torch.ones(2, dtype=torch.bool)}
    keep, reached, _ = select_budget(cost, "macs", 12, scores, dead)
    assert keep["fc1"].tolist() == [True, False, True] and reached == 12
    # scores are made comparable across layers by each layer's mean over its alive units
    s = normalized_scores("ln_structured", torch.tensor([1.0, 2.0, 0.0, 3.0]), torch.empty(0), 2)
    assert torch.allclose(s, torch.tensor([0.5, 1.0, 0.0, 1.5], dtype=torch.float64))
