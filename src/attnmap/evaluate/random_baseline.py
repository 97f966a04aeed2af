"""The random-map baseline: what any method must beat to claim it found something.

Uniform random values on the model's patch grid, drawn from a seeded generator, so the baseline
row is the same every run. The maps do not depend on the image or the class.
"""

from __future__ import annotations

import torch

from attnmap.errors import InputError


def random_patch_maps(n_maps: int, grid: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """(n_maps, gh, gw) float64 uniform [0, 1) maps; map i is the same for a seed whatever n_maps is."""
    if n_maps < 0 or len(grid) != 2 or min(grid) < 1:
        raise InputError(f"need n_maps >= 0 and a grid of two positive sizes, got {n_maps}, {grid}")
    first = int(seed) * 1_000_003  # map i's generator seed is first + i, a signed 64-bit value
    if not -(2**63) <= first <= 2**63 - 1 - n_maps:
        raise InputError(f"random-baseline seed {seed} is too large in magnitude (keep |seed| below 9e12)")
    maps = torch.empty((n_maps, *grid), dtype=torch.float64)
    for index in range(n_maps):
        generator = torch.Generator().manual_seed(first + index)
        maps[index] = torch.rand(grid, generator=generator, dtype=torch.float64)
    return maps
