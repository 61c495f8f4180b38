"""The MCMC peer's CPU ops against the MCMC paper's formulas, and its cap."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from distilled_gs_ns.errors import UserInputError
from distilled_gs_ns.models.mcmc import MCMCModelConfig
from distilled_gs_ns.strategies.mcmc import DeviceMCMCStrategy, position_noise_covariances, relocated_opacity_and_scale


def eq9_reference(opacity: float, scale: float, n: int):
    """The MCMC paper's Eq. 9 written out as its double sum, in Python floats (float64)."""
    new_opacity = 1.0 - (1.0 - opacity) ** (1.0 / n)
    denominator = 0.0
    for i in range(1, n + 1):
        for k in range(i):
            denominator += math.comb(i - 1, k) * (-1) ** k / math.sqrt(k + 1) * new_opacity ** (k + 1)
    return new_opacity, opacity / denominator * scale


def test_relocation_matches_eq9_for_every_split_count() -> None:
    torch.manual_seed(0)
    n = torch.arange(1, 52).repeat(4)
    opacities = torch.rand(n.shape[0], dtype=torch.float64) * 0.98 + 0.01
    scales = torch.rand(n.shape[0], 3, dtype=torch.float64) + 0.1
    new_opacities, new_scales = relocated_opacity_and_scale(opacities, scales, n)
    for i in range(n.shape[0]):
        want_opacity, want_scale = eq9_reference(float(opacities[i]), float(scales[i, 0]), int(n[i]))
        assert float(new_opacities[i]) == pytest.approx(want_opacity, rel=1e-12)
        assert float(new_scales[i, 0]) == pytest.approx(want_scale, rel=1e-9)
    ratio = new_scales / scales
    assert torch.allclose(ratio, ratio[:, :1].expand(-1, 3))  # one factor for the three axes


def test_relocation_of_one_copy_changes_nothing_and_float32_stays_close() -> None:
    opacities = torch.tensor([0.02, 0.5, 0.97])
    scales = torch.tensor([[0.1, 0.2, 0.3]] * 3)
    same_o, same_s = relocated_opacity_and_scale(opacities, scales, torch.ones(3, dtype=torch.long))
    assert torch.allclose(same_o, opacities) and torch.allclose(same_s, scales)
    o32, s32 = relocated_opacity_and_scale(opacities, scales, torch.tensor([2, 17, 51]))
    o64, s64 = relocated_opacity_and_scale(opacities.double(), scales.double(), torch.tensor([2, 17, 51]))
    assert o32.dtype == torch.float32 and torch.allclose(o32.double(), o64, rtol=1e-6)
    assert torch.allclose(s32.double(), s64, rtol=1e-6)
    # n copies at the new opacity block light like the original: 1 - (1 - o')^n = o
    assert torch.allclose(1 - (1 - o64) ** torch.tensor([2.0, 17.0, 51.0], dtype=torch.float64), opacities.double())


def rotation(q: Tensor) -> Tensor:
    w, x, y, z = (q / q.norm()).tolist()
    return torch.tensor(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def test_noise_covariance_is_r_s_s_rt() -> None:
    torch.manual_seed(1)
    quats, scales = torch.randn(5, 4), torch.rand(5, 3) + 0.05
    covars = position_noise_covariances(quats, scales)
    for i in range(5):
        r, s = rotation(quats[i]), torch.diag(scales[i])
        assert torch.allclose(covars[i], r @ s @ s @ r.T, atol=1e-6)


def gaussians(n: int, opacity: float = 0.5):
    params = torch.nn.ParameterDict(
        {
            "means": torch.nn.Parameter(torch.randn(n, 3)),
            "scales": torch.nn.Parameter(torch.full((n, 3), -3.0)),
            "quats": torch.nn.Parameter(torch.randn(n, 4)),
            "opacities": torch.nn.Parameter(torch.full((n, 1), math.log(opacity / (1 - opacity)))),
            "features_dc": torch.nn.Parameter(torch.rand(n, 3)),
        }
    )
    optimizers = {name: torch.optim.Adam([p], lr=1e-3) for name, p in params.items()}
    for p in params.values():
        p.grad = torch.ones_like(p)
    for opt in optimizers.values():
        opt.step()  # Adam state exists, non-zero
    return params, optimizers


def test_growth_stops_exactly_at_the_cap() -> None:
    torch.manual_seed(2)
    params, optimizers = gaussians(100)
    strategy = DeviceMCMCStrategy(cap_max=130, refine_start_iter=0, refine_stop_iter=10_000, refine_every=1)
    counts = []
    for step in range(1, 12):
        strategy.step_post_backward(params, optimizers, {}, step, {}, lr=1e-4)
        counts.append(params["means"].shape[0])
        assert all(opt.param_groups[0]["params"][0] is params[name] for name, opt in optimizers.items())
        assert optimizers["means"].state[params["means"]]["exp_avg"].shape[0] == counts[-1]
    assert counts[0] == 105 and max(counts) == 130 and counts[-1] == 130


def test_dead_gaussians_move_onto_live_ones_with_fresh_optimizer_state() -> None:
    torch.manual_seed(3)
    params, optimizers = gaussians(50)
    dead = torch.arange(50) < 10
    params["opacities"].data[dead] = -10.0  # opacity 4.5e-5, below min_opacity
    before_means = params["means"].detach().clone()
    moved = DeviceMCMCStrategy(min_opacity=0.005)._relocate(params, optimizers)
    assert moved == 10
    means = params["means"].detach()
    sources = set()
    for i in range(10):  # each dead slot now holds a copy of a live Gaussian
        match = ((means[i] - before_means[10:]).abs().sum(dim=1) < 1e-6).nonzero()
        assert match.numel() >= 1
        sources.add(10 + int(match[0]))
    opacities = torch.sigmoid(params["opacities"].detach()).flatten()
    assert bool((opacities > 0.005 - 1e-7).all())
    assert all(float(opacities[i]) < 0.5 for i in sources)  # each source shares its opacity with its copies
    exp_avg = optimizers["means"].state[params["means"]]["exp_avg"]
    assert all(float(exp_avg[i].abs().sum()) == 0.0 for i in sources)  # as gsplat: the sources' Adam state restarts


def test_noise_moves_transparent_gaussians_only() -> None:
    torch.manual_seed(4)
    params, _ = gaussians(20, opacity=0.9)
    params["opacities"].data[:5] = -8.0  # nearly transparent
    before = params["means"].detach().clone()
    DeviceMCMCStrategy()._inject_noise(params, scale=5e5 * 1.6e-4)
    shift = (params["means"].detach() - before).norm(dim=1)
    assert bool((shift[:5] > 1e-5).all()) and float(shift[5:].max()) < 1e-8


@pytest.mark.parametrize(
    "field, value", [("max_gaussians", 0), ("min_opacity", 1.5), ("noise_lr", float("nan")), ("init_opacity", 0.0)]
)
def test_invalid_settings_are_refused(field: str, value) -> None:
    with pytest.raises(UserInputError, match=f"pipeline.model.{field}"):
        MCMCModelConfig(**{field: value})
