"""A Gaussian budget from a file size: how many Gaussians fit in M megabytes of a given format.

Users of compact splats think in megabytes (MB = 10^6 bytes). The file size of a format is measured,
not modelled: the first n Gaussians of a sample (the teacher's, most important first, as the student
keeps them) are encoded for trial counts n, and the largest n whose file fits is the budget. PLY and
compressed PLY sizes depend on the count alone; SPZ is gzip-compressed, so its size also depends on
the values, which change while the student trains: its budget keeps `GZIP_MARGIN` in reserve, and
the student measures its own file again after its last step (`largest_count_within` on its own
Gaussians) and drops its least important ones if it still does not fit.
"""

from __future__ import annotations

import math

from distilled_gs_ns.errors import UserInputError
from distilled_gs_ns.export.formats import SplatFormat
from distilled_gs_ns.export.splat_data import SplatData

GZIP_MARGIN = 0.05
"""Share of the size budget an SPZ budget leaves free for the student's values compressing worse
than the teacher's (measured: 8-9% worse on the demo scene, so the final check trims the rest)."""


def gaussians_for_megabytes(megabytes: float, fmt: SplatFormat, sample: SplatData) -> int:
    """The largest Gaussian count whose file in `fmt` fits in `megabytes`, measured on `sample`."""
    if not megabytes > 0:
        raise UserInputError(f"pipeline.model.max-megabytes must be positive, got {megabytes}")
    limit = megabytes * 1e6
    if fmt.name == "spz":
        limit *= 1 - GZIP_MARGIN
    return largest_count_within(limit, fmt, sample, megabytes)


def largest_count_within(limit: float, fmt: SplatFormat, sample: SplatData, megabytes: float | None = None) -> int:
    """The largest n whose file of `sample`'s first n Gaussians is at most `limit` bytes; beyond the
    sample's count, extrapolated from its bytes per Gaussian."""

    def size(n: int) -> int:
        return len(fmt.encode(sample.select(slice(0, n))))

    smallest = size(1)
    if smallest > limit:
        raise UserInputError(
            f"pipeline.model.max-megabytes {megabytes if megabytes is not None else limit / 1e6} is too small for "
            f"even one Gaussian in {fmt.name} ({smallest} bytes at SH degree {sample.sh_degree})"
        )
    full = size(sample.count)
    if full <= limit:
        return max(sample.count, math.floor(sample.count * limit / full))
    low, high = 1, sample.count  # size(low) fits, size(high) does not
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if size(middle) <= limit else (low, middle)
    return low
