"""Perturbation and dropout regularisers of the Distilled-3DGS teachers."""

from __future__ import annotations

import pytest
import torch

from distilled_gs_ns.regularization.dropout import GaussianDropout
from distilled_gs_ns.regularization.perturbation import GaussianPerturbation, GradientTracker, PerturbationSchedule


def _params(num: int = 20000) -> dict:
    torch.manual_seed(0)
    return {
        "means": torch.nn.Parameter(torch.randn(num, 3) * 3.0),
        "scales": torch.nn.Parameter(torch.full((num, 3), -5.0)),
        "quats": torch.nn.Parameter(torch.randn(num, 4) * 0.1),
        "opacities": torch.nn.Parameter(torch.randn(num, 1)),
    }


def _adam(params: dict) -> dict:
    optimizers = {name: torch.optim.Adam([p], lr=1e-3) for name, p in params.items()}
    loss = sum((p**2).sum() for p in params.values())
    loss.backward()
    for opt in optimizers.values():
        opt.step()
    return optimizers


def test_schedule_is_relative_to_the_run_length() -> None:
    assert PerturbationSchedule().steps(30000) == list(range(15000, 25001, 1000))
    assert PerturbationSchedule().steps(300) == list(range(150, 251, 10))
    with pytest.raises(ValueError):
        PerturbationSchedule(start=0.9, stop=0.5).steps(100)


def test_perturbation_touches_only_selected_gaussians_with_the_paper_noise_scale() -> None:
    params = _params()
    optimizers = _adam(params)
    before = {k: v.detach().clone() for k, v in params.items()}
    mask = torch.zeros(params["means"].shape[0], dtype=torch.bool)
    mask[::2] = True
    touched = GaussianPerturbation(noise_scale=0.1, selection="all").apply(params, optimizers, mask)
    assert touched == int(mask.sum())
    for name, param in params.items():
        delta = (param.detach() - before[name]).reshape(param.shape[0], -1)
        assert torch.all(delta[~mask] == 0)
        expected_std = 0.1 * before[name].reshape(param.shape[0], -1).abs().mean(0).clamp(min=1.0)
        assert torch.allclose(delta[mask].std(0), expected_std, rtol=0.05), name
        state = optimizers[name].state[param]
        assert torch.all(state["exp_avg"][mask] == 0) and torch.all(state["exp_avg_sq"][mask] == 0)
        assert torch.all(state["exp_avg_sq"][~mask] > 0)
    # means have mean |value| ~ 2.4 > 1, so their noise is larger than the floor of 0.1
    means_std = (params["means"].detach() - before["means"])[mask].std(0)
    assert torch.all(means_std > 0.2)


def test_clone_candidate_selection_needs_high_gradient_and_small_scale() -> None:
    params = _params(6)
    params["scales"].data[3:] = 0.0  # exp(0) = 1: large
    grads = torch.tensor([1e-2, 1e-5, 1e-2, 1e-2, 1e-5, 1e-2])
    rule = GaussianPerturbation(grad_threshold=1e-3, scale_threshold=0.01)
    assert rule.select(params, grads).tolist() == [True, False, True, False, False, False]
    assert not rule.select(params, None).any()


def test_gradient_tracker_averages_over_views_that_saw_each_gaussian() -> None:
    tracker = GradientTracker()
    for value in (1.0, 3.0):
        means2d = torch.zeros(1, 3, 2, requires_grad=True)
        means2d.grad = torch.tensor([[[value, 0.0], [value, 0.0], [0.0, 0.0]]])
        radii = torch.tensor([[1, 1, 0]])
        tracker.update({"means2d": means2d, "width": 2, "height": 2, "n_cameras": 1, "radii": radii}, use_absgrad=False)
    assert torch.allclose(tracker.mean(), torch.tensor([2.0, 2.0, 0.0]))


def test_dropout_zeroes_the_rate_and_preserves_expected_opacity() -> None:
    torch.manual_seed(0)
    opacities = torch.rand(200000)
    dropped = GaussianDropout(rate=0.2).apply(opacities, 0.2)
    assert abs((dropped == 0).float().mean().item() - 0.2) < 0.01
    kept = dropped != 0
    assert torch.allclose(dropped[kept], opacities[kept] / 0.8)
    assert abs(dropped.mean().item() - opacities.mean().item()) < 0.01


def test_dropout_rate_ramps_over_its_window_when_a_final_rate_is_given() -> None:
    ramp = GaussianDropout(rate=0.2, final_rate=0.3)
    assert ramp.rate_at(0, 0, 100) == pytest.approx(0.2)
    assert ramp.rate_at(50, 0, 100) == pytest.approx(0.25)
    assert ramp.rate_at(100, 0, 100) == pytest.approx(0.3)
    anneal = GaussianDropout(rate=0.2, final_rate=0.0)
    assert anneal.rate_at(1500, 2000, 2999) == pytest.approx(0.2)  # before the window: its first rate
    assert anneal.rate_at(2000, 2000, 2999) == pytest.approx(0.2)
    assert anneal.rate_at(2999, 2000, 2999) == 0.0
    assert GaussianDropout(rate=0.2).rate_at(100, 0, 100) == 0.2
    with pytest.raises(ValueError):
        GaussianDropout(rate=1.0)
