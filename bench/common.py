"""What several benchmarks share: a best-of-n wall clock, and a synthetic `wsi run` set-up."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` wall-clock runs of ``fn``, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def write_run_config(
    root: Path,
    encoder: str,
    *,
    n_slides: int,
    size: int,
    batch_size: int,
    sections: dict[str, Any],
    **cohort_options: Any,
) -> Path:
    """Synthetic slides, a seeded CLAM_SB for ``encoder``'s features and a `wsi run` config in ``root``;
    ``sections`` adds or replaces config sections (heatmap, sampling, ...). Returns the config's path."""
    from attnmap.data.synthetic_slides import make_cohort
    from attnmap.mil import CLAM_SB
    from attnmap.wsi.encoders import load_encoder

    csv_path = make_cohort(root / "slides", n_slides=n_slides, seed=0, size=(size, size), **cohort_options)
    feature_dim = load_encoder(encoder).feature_dim
    torch.manual_seed(0)
    torch.save(CLAM_SB(embed_dim=feature_dim, n_classes=2).state_dict(), root / "clam.pt")
    config = {
        "slides": {"csv": str(csv_path), "data_dir": str(csv_path.parent), "extension": ".tif"},
        "segmentation": {"a_t": 1, "a_h": 1},
        "patching": {"patch_size": 256, "level": 0},
        "features": {"encoder": encoder, "batch_size": batch_size},
        "model": {"checkpoint": str(root / "clam.pt")},
        "run": {"output_dir": str(root / "out"), "device": "cpu"},
        **sections,
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
