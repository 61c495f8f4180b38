"""Why every-step dropout inflates densification: the split/clone statistics of one trained splat with
and without dropout.

For each training view of a trained run, renders the splat as training does, backpropagates the
training loss and accumulates gsplat's DefaultStrategy statistics (screen-space gradient norm of
each Gaussian, |.| per pixel when the run uses absgrad, over the views it is visible in) under:
no dropout; dropout at p with the survivors' opacity scaled by 1 / (1 - p) (the dropout teacher's);
dropout at p without that scaling. The share of Gaussians whose mean statistic passes the run's
densify_grad_thresh is the share the next refinement would split or clone.

Usage: python benchmarks/dropout_gradients.py --load-config RUN/config.yml [--rate 0.2] [--repeats 2] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, Optional

import torch


def statistics(pipeline, rate: float, scaled: bool, repeats: int, seed: int = 0) -> Dict[str, float]:
    model = pipeline.model
    model.train()
    torch.manual_seed(seed)
    plain_render = type(model).gaussians_for_render

    def with_dropout(self, crop_ids: Optional[torch.Tensor], camera=None, camera_to_world=None):
        gaussians = plain_render(self, crop_ids, camera, camera_to_world)
        if rate > 0:
            keep = (torch.rand(gaussians.opacities.shape[0]) >= rate).to(gaussians.opacities.dtype)
            gaussians.opacities = gaussians.opacities * keep / ((1.0 - rate) if scaled else 1.0)
        return gaussians

    model.gaussians_for_render = with_dropout.__get__(model)
    n = model.num_points
    grad2d, count = torch.zeros(n), torch.zeros(n)
    losses = []
    for step in range(repeats * len(pipeline.datamanager.train_dataset)):
        camera, batch = pipeline.datamanager.next_train(step)  # undistorted, as training serves them
        outputs = model.get_outputs(camera)
        loss = model.get_loss_dict(outputs, batch)["main_loss"]
        loss.backward()
        info = model.info
        grads = (info["means2d"].absgrad if model.config.use_absgrad else info["means2d"].grad).clone()
        grads[..., 0] *= info["width"] / 2.0 * info["n_cameras"]
        grads[..., 1] *= info["height"] / 2.0 * info["n_cameras"]
        seen = info["radii"] > 0
        ids = torch.where(seen)[1]
        grad2d.index_add_(0, ids, grads[seen].norm(dim=-1))
        count.index_add_(0, ids, torch.ones_like(ids, dtype=torch.float32))
        model.zero_grad(set_to_none=True)
        losses.append(loss.item())
    del model.gaussians_for_render
    mean = grad2d / count.clamp(min=1)
    visible = count > 0
    threshold = model.config.densify_grad_thresh
    return {
        "rate": rate,
        "scaled": scaled,
        "loss": sum(losses) / len(losses),
        "mean_grad": float(mean[visible].mean()),
        "median_grad": float(mean[visible].median()),
        "share_above_threshold": float((mean[visible] > threshold).float().mean()),
        "threshold": threshold,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--load-config", type=Path, required=True)
    parser.add_argument("--rate", type=float, default=0.2)
    parser.add_argument("--repeats", type=int, default=2, help="passes over the training views (dropout is random)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from nerfstudio.utils.eval_utils import eval_setup

    _, pipeline, _, step = eval_setup(args.load_config, test_mode="val")
    rows = [
        statistics(pipeline, 0.0, True, 1),
        statistics(pipeline, args.rate, True, args.repeats),
        statistics(pipeline, args.rate, False, args.repeats),
    ]
    print(f"{args.load_config} (step {step}, {pipeline.model.num_points} Gaussians, absgrad {pipeline.model.config.use_absgrad})")
    print("| dropout | survivors scaled | training loss | mean grad | median grad | share > threshold |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['rate']:g} | {r['scaled']} | {r['loss']:.4f} | {r['mean_grad']:.5f} | {r['median_grad']:.5f} | {r['share_above_threshold']:.1%} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"config": str(args.load_config), "step": step, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
