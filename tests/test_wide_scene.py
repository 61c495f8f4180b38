"""The synthetic wide scene for block-wise training: nerfstudio-readable, non-trivial, and wide."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distilled_gs_ns.data import wide_scene
from distilled_gs_ns.data.wide_scene import GAUSSIANS_PER_OBJECT, PALETTE, build_wide_scene, make_wide_scene
from distilled_gs_ns.rendering.cameras import world_to_camera

TINY = dict(num_objects=6, num_views=10, image_size=(32, 48))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_wide_scene(tmp_path_factory.mktemp("wide") / "scene", seed=0, **TINY)


def load_images(root: Path) -> np.ndarray:
    meta = json.loads((root / "transforms.json").read_text())
    return np.stack([np.asarray(Image.open(root / f["file_path"])) for f in meta["frames"]])


def visible_objects(c2w: torch.Tensor, K: torch.Tensor, centres: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[V, K] bool: object body centres (0.7 m above their base) in front of each camera and inside its image."""
    view = world_to_camera(c2w)
    body = centres + torch.tensor([0.0, 0.0, 0.7])
    cam = torch.einsum("vij,kj->vki", view[:, :3, :3], body) + view[:, None, :3, 3]
    pix = torch.einsum("ij,vkj->vki", K, cam / cam[..., 2:])
    return (cam[..., 2] > 0) & (pix[..., 0] >= 0) & (pix[..., 0] < width) & (pix[..., 1] >= 0) & (pix[..., 1] < height)


def test_files_and_layout(tiny: Path) -> None:
    meta = json.loads((tiny / "transforms.json").read_text())
    assert meta["camera_model"] == "OPENCV" and (meta["w"], meta["h"]) == (48, 32)
    assert (meta["cx"], meta["cy"]) == (24.0, 16.0) and meta["fl_x"] == meta["fl_y"]
    assert meta["ply_file_path"] == "sparse_pc.ply" and (tiny / "sparse_pc.ply").is_file()
    assert len(meta["frames"]) == 10 and all((tiny / f["file_path"]).is_file() for f in meta["frames"])
    names = [f["file_path"] for f in meta["frames"]]
    assert meta["val_filenames"] == meta["test_filenames"] == [names[0], names[8]]
    assert meta["train_filenames"] == [n for i, n in enumerate(names) if i % 8 != 0]
    assert all(np.asarray(f["transform_matrix"])[3].tolist() == [0, 0, 0, 1] for f in meta["frames"])


def test_nerfstudio_reads_the_scene(tiny: Path) -> None:
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    parser = NerfstudioDataParserConfig(data=tiny, load_3D_points=True).setup()
    train = parser.get_dataparser_outputs("train")
    val = parser.get_dataparser_outputs("val")
    assert len(train.image_filenames) == 8 and train.cameras.shape == (8,)
    assert len(val.image_filenames) == 2
    assert int(train.cameras.width[0]) == 48 and int(train.cameras.height[0]) == 32
    scene = build_wide_scene(**TINY)
    assert train.metadata["points3D_xyz"].shape == (scene.gaussians.means.shape[0] // 2, 3)
    rgb = train.metadata["points3D_rgb"].float() / 255
    assert rgb.std(0).min() > 0.05  # coloured objects, not a single grey


def test_images_show_the_objects(tiny: Path) -> None:
    images = load_images(tiny).astype(np.float32) / 255
    assert images.shape == (10, 32, 48, 3)
    assert float(images.std(axis=(1, 2)).min()) > 0.03  # every view has structure
    assert float(images.min(-1).max(axis=(1, 2)).min()) < 0.95  # and is not mostly white background
    # Every object's palette colour appears somewhere (a pixel within 0.15 of it, shading aside).
    pixels = torch.from_numpy(images.reshape(-1, 3))
    for colour in PALETTE[: TINY["num_objects"]]:
        direction = colour / colour.norm()
        cos = (pixels @ direction) / pixels.norm(dim=-1).clamp(min=1e-6)
        assert float(cos.max()) > 0.99


def test_rendered_views_match_the_written_images(tiny: Path) -> None:
    images = torch.from_numpy(load_images(tiny)).float() / 255
    rendered = wide_scene.render_views(build_wide_scene(**TINY))
    assert float((images - rendered).abs().max()) <= 0.5 / 255 + 1e-6


@pytest.mark.parametrize("config", [TINY, dict()], ids=["tiny", "default"])
def test_each_view_sees_only_part_of_the_scene(config) -> None:
    scene = build_wide_scene(**config)
    height, width = scene.image_size
    seen = visible_objects(scene.camera_to_worlds, scene.K, scene.object_centres, height, width)
    num_objects = scene.object_centres.shape[0]
    assert int(seen.sum(1).min()) < num_objects / 2  # some view sees fewer than half of the objects
    assert int(seen.sum(1).max()) < num_objects  # no view sees everything
    assert int(seen.sum(0).min()) >= 2  # but every object is seen from at least two views
    spread = scene.object_centres[:, :2].max(0).values - scene.object_centres[:, :2].min(0).values
    assert float(spread.max()) > 8.0


def test_written_cameras_are_the_scene_cameras(tiny: Path) -> None:
    """The objects visible by the written transforms are those of the scene: no axis convention slip."""
    meta = json.loads((tiny / "transforms.json").read_text())
    c2w = torch.tensor([f["transform_matrix"] for f in meta["frames"]])[:, :3, :]
    K = torch.tensor([[meta["fl_x"], 0, meta["cx"]], [0, meta["fl_y"], meta["cy"]], [0, 0, 1.0]])
    scene = build_wide_scene(**TINY)
    seen = visible_objects(c2w, K, scene.object_centres, meta["h"], meta["w"])
    images = torch.from_numpy(load_images(tiny)).float() / 255
    # Where an object's centre projects, the image shows that object's colour, unless another object
    # occludes it (or, for the ring, shows through its hole): then still an object's colour, not the ground.
    view = world_to_camera(c2w)
    palette = PALETTE[: TINY["num_objects"]]
    palette = palette / palette.norm(dim=-1, keepdim=True)
    own = []
    for v, k in torch.nonzero(seen).tolist():
        body = scene.object_centres[k] + torch.tensor([0.0, 0.0, 0.7])
        cam = view[v, :3, :3] @ body + view[v, :3, 3]
        x, y = (K @ (cam / cam[2]))[:2].long().tolist()
        cos = palette @ images[v, y, x] / images[v, y, x].norm()
        assert float(cos.max()) > 0.97, (v, k, images[v, y, x].tolist())
        own.append(int(cos.argmax()) == k)
    assert len(own) >= 10 and sum(own) >= 0.8 * len(own)


def test_deterministic_for_a_seed(tiny: Path, tmp_path: Path) -> None:
    again = make_wide_scene(tmp_path / "again", seed=0, **TINY)
    assert (again / "transforms.json").read_text() == (tiny / "transforms.json").read_text()
    assert np.array_equal(load_images(again), load_images(tiny))
    assert (again / "sparse_pc.ply").read_bytes() == (tiny / "sparse_pc.ply").read_bytes()
    other = build_wide_scene(seed=1, **TINY)
    assert not torch.equal(other.object_centres, build_wide_scene(seed=0, **TINY).object_centres)


def test_command_line(tmp_path: Path, monkeypatch) -> None:
    argv = ["wide_scene", "--out", str(tmp_path / "cli"), "--num-objects", "2", "--num-views", "3"]
    monkeypatch.setattr(sys, "argv", argv + ["--height", "16", "--width", "24", "--seed", "4"])
    wide_scene.main()
    meta = json.loads((tmp_path / "cli" / "transforms.json").read_text())
    assert len(meta["frames"]) == 3 and (meta["w"], meta["h"]) == (24, 16)
    assert (tmp_path / "cli" / "sparse_pc.ply").stat().st_size > 2 * GAUSSIANS_PER_OBJECT
