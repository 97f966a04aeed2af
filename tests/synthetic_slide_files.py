"""Small synthetic pyramidal TIFF slides for the pipeline, CLI and cohort tests (seeded, < 0.1 s each)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_test_slide(
    path: Path, seed: int, size: tuple[int, int] = (1024, 768), mpp: float | None = 0.5, n_levels: int = 2
) -> Path:
    """A white slide with 2–3 textured pink tissue blobs; ``n_levels`` levels (downsample 1, 2, 4, ...)
    as tiled pages.

    ``mpp``: µm per level-0 pixel, written as the pages' resolution; None writes none (no pixel size).

    Levels are separate top-level pages, reduced ones with subfiletype 1, which is what OpenSlide
    needs to see them.
    """
    import tifffile

    rng = np.random.default_rng(seed)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    tissue = np.zeros((height, width), dtype=bool)
    for _ in range(int(rng.integers(2, 4))):
        cx, cy = rng.uniform(0.25, 0.75) * width, rng.uniform(0.25, 0.75) * height
        rx, ry = rng.uniform(0.12, 0.25) * width, rng.uniform(0.12, 0.25) * height
        tissue |= ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
    image = np.full((height, width, 3), 245, dtype=np.uint8)
    pink = np.array([214, 120, 170], dtype=np.float64)
    noise = rng.normal(0.0, 18.0, size=(height, width, 1))
    nuclei = rng.random((height, width)) < 0.02
    colour = pink + noise
    colour[nuclei] = np.array([90, 40, 120])
    image[tissue] = np.clip(colour[tissue], 0, 255).astype(np.uint8)
    resolution = (1e4 / mpp, 1e4 / mpp) if mpp is not None else None
    path.parent.mkdir(parents=True, exist_ok=True)
    with tifffile.TiffWriter(path) as tif:
        level = image
        for index in range(n_levels):
            tif.write(
                level,
                tile=(256, 256),
                compression="zlib",
                photometric="rgb",
                subfiletype=0 if index == 0 else 1,
                **(
                    {
                        "resolution": (resolution[0] / 2**index, resolution[1] / 2**index),
                        "resolutionunit": "CENTIMETER",
                    }
                    if resolution is not None
                    else {}
                ),
            )
            level = level[: level.shape[0] // 2 * 2, : level.shape[1] // 2 * 2]
            level = level.reshape(level.shape[0] // 2, 2, level.shape[1] // 2, 2, 3).mean(axis=(1, 3))
            level = level.round().astype(np.uint8)
    return path


def write_tiny_encoder(path: Path, seed: int = 0) -> str:
    """A seeded 2-layer CNN (3 → 4 → 8 channels, pooled: 8-d features) saved as a TorchScript file.

    Returns the encoder name that loads it, ``torchscript:PATH`` (TorchScript is never tried
    implicitly on a file)."""
    import warnings

    import torch

    class TinyCNN(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1)
            self.conv2 = torch.nn.Conv2d(4, 8, 3, stride=2, padding=1)

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.conv2(torch.relu(self.conv1(images)))).mean(dim=(2, 3))

    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 deprecates TorchScript
        # traced, not scripted: the script compiler re-reads torch's module sources, which failed
        # once in a full run ("builtin cannot be used as a value" in Conv2d._conv_forward)
        torch.jit.trace(TinyCNN().eval(), torch.zeros(1, 3, 32, 32)).save(str(path))
    return f"torchscript:{path}"


def write_clam_checkpoint(path: Path, embed_dim: int = 8, seed: int = 0, multi_branch: bool = False) -> Path:
    """A CLAM_SB (or MB) with seeded random weights, saved as a plain state_dict like CLAM's checkpoints."""
    import torch

    from attnmap.mil import CLAM_MB, CLAM_SB

    torch.manual_seed(seed)
    model = (CLAM_MB if multi_branch else CLAM_SB)(embed_dim=embed_dim, n_classes=2)
    with torch.no_grad():  # spread the weights so attention and predictions vary across patches
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
    torch.save(model.state_dict(), path)
    return path


def write_pipeline_setup(root: Path, n_slides: int = 2, overrides: dict | None = None) -> Path:
    """Slides, a slide CSV, a tiny encoder, a CLAM checkpoint and a YAML config in ``root``; returns its path.

    Small everything (64-px patches at level 0, 32-px encoder input) so that a slide runs in about a second.
    """
    import yaml

    root.mkdir(parents=True, exist_ok=True)
    names = []
    for index in range(n_slides):
        write_test_slide(root / "slides" / f"slide_{index}.tif", seed=index)
        names.append(f"slide_{index}")
    (root / "slides.csv").write_text(
        "slide_id,label\n" + "".join(f"{n},{i % 2}\n" for i, n in enumerate(names))
    )
    write_tiny_encoder(root / "encoder.pt")
    write_clam_checkpoint(root / "clam.pt")
    config = {
        "slides": {"csv": "slides.csv", "data_dir": "slides", "extension": ".tif"},
        "segmentation": {"level": 1, "sthresh": 8, "mthresh": 7, "close": 4, "a_t": 0.05, "a_h": 0.01},
        "patching": {"patch_size": 64, "level": 0},
        "features": {"encoder": "torchscript:encoder.pt", "input_size": 32, "batch_size": 32},
        "model": {"checkpoint": "clam.pt", "class_names": ["normal", "tumour"]},
        "heatmap": {"vis_level": 1, "alpha": 0.5, "scale": "clam", "legend": False},  # CLAM-exact pixels
        "sampling": {"top_k": 3, "bottom_k": 2},
        "run": {"output_dir": "out", "device": "cpu"},
    }
    for section, values in (overrides or {}).items():
        config.setdefault(section, {}).update(values)
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def write_changed_config(setup: Path, output_dir: Path, **sections: dict) -> Path:
    """A copy of the config ``setup`` (from `write_pipeline_setup`) with ``sections`` updated and
    ``run.output_dir`` set, written beside it so its relative paths still hold; returns its path.

    One file per output folder (named after the folder's path), so the tests sharing one setup
    never overwrite each other's configuration.
    """
    import zlib

    import yaml

    raw = yaml.safe_load(setup.read_text())
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    raw["run"]["output_dir"] = str(output_dir)
    path = setup.parent / f"config_{zlib.crc32(str(output_dir).encode()):08x}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path
