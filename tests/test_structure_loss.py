"""The voxel-histogram structure loss of Distilled-3DGS."""

from __future__ import annotations

import pytest
import torch

from distilled_gs_ns.losses.structure import StructureLoss, VoxelGrid, soft_voxel_histogram


def blobs(num: int, seed: int = 0) -> torch.Tensor:
    """A clustered cloud (5 blobs), like the surfaces a trained splat concentrates on."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(5, 3, generator=g) * 2 - 1
    which = torch.randint(0, 5, (num,), generator=g)
    return centres[which] + 0.08 * torch.randn(num, 3, generator=g)


def test_identical_clouds_give_zero() -> None:
    cloud = blobs(50_000)
    assert float(StructureLoss(cloud, resolution=32)(cloud)) == pytest.approx(0.0, abs=1e-6)


def test_a_random_tenth_of_the_cloud_scores_nearly_zero() -> None:
    """Density invariance: the student may hold far fewer Gaussians with the same distribution."""
    cloud = blobs(200_000)
    loss = StructureLoss(cloud, resolution=32)
    subset = cloud[torch.randperm(cloud.shape[0], generator=torch.Generator().manual_seed(1))[:20_000]]
    assert float(loss(subset)) < 0.05


def test_a_shifted_cloud_scores_much_worse() -> None:
    cloud = blobs(200_000)
    loss = StructureLoss(cloud, resolution=32)
    subset = cloud[:20_000]
    assert float(loss(subset + torch.tensor([0.15, 0.0, 0.0]))) > 5 * float(loss(subset)) + 0.2


def test_histogram_is_normalised_and_conserves_mass_inside_the_grid() -> None:
    cloud = blobs(10_000)
    grid = VoxelGrid.around(cloud, resolution=16, quantile=0.0, padding=0.2)
    hist = soft_voxel_histogram(cloud, grid)
    assert hist.shape == (16**3,)
    assert float(hist.sum()) == pytest.approx(1.0, abs=1e-5)
    assert float(hist.min()) >= 0.0


def test_trilinear_weights_of_a_single_point() -> None:
    grid = VoxelGrid(lower=torch.zeros(3), upper=torch.ones(3) * 4, resolution=4)
    # Voxel centres at 0.5, 1.5, ...: a point at x = 1.25 lies 3/4 of the way from voxel 0 to voxel 1.
    hist = soft_voxel_histogram(torch.tensor([[1.25, 0.5, 0.5]]), grid).view(4, 4, 4)
    assert float(hist[0, 0, 0]) == pytest.approx(0.25)
    assert float(hist[1, 0, 0]) == pytest.approx(0.75)


def test_gradient_steps_on_student_positions_lower_the_loss() -> None:
    teacher = blobs(100_000)
    loss = StructureLoss(teacher, resolution=32)
    student = (teacher[:5_000] + 0.05 * torch.randn(5_000, 3, generator=torch.Generator().manual_seed(2))).requires_grad_(True)
    optimizer = torch.optim.Adam([student], lr=2e-3)
    start = float(loss(student))
    for _ in range(30):
        optimizer.zero_grad()
        value = loss(student)
        value.backward()
        optimizer.step()
    assert student.grad is not None and float(student.grad.abs().sum()) > 0
    assert float(loss(student)) < 0.8 * start


def test_points_outside_the_grid_are_ignored() -> None:
    teacher = blobs(20_000)
    loss = StructureLoss(teacher, resolution=32)
    far = torch.full((100, 3), 50.0)
    assert float(loss(torch.cat([teacher, far]))) == pytest.approx(0.0, abs=1e-6)
