"""LPIPS that never downloads at model construction.

torchmetrics' LPIPS builds torchvision's AlexNet with ImageNet weights, fetched from the internet on
first use. Building it lazily keeps `ns-train` and friends working offline: the first evaluation tries
once; if the weights cannot be had, LPIPS is reported as unavailable with a single warning and every
other metric is still computed.
"""

from __future__ import annotations

import warnings
from typing import Optional

import torch
from torch import Tensor


class LazyLPIPS:
    """Callable LPIPS (inputs [B, 3, H, W] in [0, 1]) returning None when it is unavailable.

    Deliberately not an `nn.Module`: its AlexNet weights do not belong in splat checkpoints.
    """

    def __init__(self) -> None:
        self._metric: Optional[torch.nn.Module] = None
        self._unavailable_reason: Optional[str] = None

    @property
    def unavailable_reason(self) -> Optional[str]:
        return self._unavailable_reason

    def _build(self) -> Optional[torch.nn.Module]:
        if self._metric is None and self._unavailable_reason is None:
            try:
                from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

                self._metric = LearnedPerceptualImagePatchSimilarity(normalize=True)
            except Exception as err:  # noqa: BLE001 - any failure to fetch/build means "unavailable"
                self._unavailable_reason = f"{type(err).__name__}: {err}"
                warnings.warn(
                    "LPIPS is unavailable (its AlexNet weights could not be loaded: "
                    f"{self._unavailable_reason}); PSNR and SSIM are still reported.",
                    stacklevel=3,
                )
        return self._metric

    def __call__(self, pred: Tensor, target: Tensor) -> Optional[float]:
        metric = self._build()
        if metric is None:
            return None
        metric = metric.to(pred.device)
        with torch.no_grad():
            return float(metric(pred.clamp(0, 1), target.clamp(0, 1)))
