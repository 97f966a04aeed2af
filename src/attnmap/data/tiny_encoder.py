"""The bundled tiny patch encoder: a fixed 4-layer CNN for the synthetic-slide MIL demo.

The MIL demo must run where nothing can be downloaded, and on a CPU in minutes, so it cannot use an
ImageNet ResNet. This encoder is a small CNN with seeded random convolutions (random convolutional
features already separate colour and texture, which is all the synthetic slides need) followed by
a fixed per-feature standardisation measured on patches of synthetic slides (no labels used). The
shipped weights (``weights/tiny_encoder.safetensors``, recipe in ``weights/tiny_encoder.json``) make
features identical across torch versions, whose random generators may change.

`load_tiny_encoder` returns the same ``Encoder(model, transform, feature_dim)`` as
`attnmap.wsi.encoders.load_encoder`. Rebuild the weights with
``python -m attnmap.data.tiny_encoder --out src/attnmap/data/weights``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from attnmap.data.bundled import require_bundled
from attnmap.errors import InputError
from attnmap.wsi.encoders import Encoder, PatchTransform, register_encoder

WEIGHTS_DIR = Path(__file__).parent / "weights"
WEIGHTS_NAME = "tiny_encoder.safetensors"
RECORD_NAME = "tiny_encoder.json"
TINY_INPUT_SIZE = 64
TINY_FEATURE_DIM = 64
TINY_MEAN = (0.5, 0.5, 0.5)
TINY_STD = (0.25, 0.25, 0.25)
_CHANNELS = (3, 16, 32, 64, TINY_FEATURE_DIM)


class TinyPatchEncoder(nn.Module):
    """(B, 3, 64, 64) normalised patches → (B, 64) standardised features.

    Four 3×3 convolutions (strides 1, 2, 2, 2) with ReLU, global average pooling, then
    ``(x - feature_mean) / feature_std`` with fixed buffers.
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for index, (c_in, c_out) in enumerate(zip(_CHANNELS[:-1], _CHANNELS[1:], strict=True)):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=1 if index == 0 else 2, padding=1), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.register_buffer("feature_mean", torch.zeros(TINY_FEATURE_DIM))
        self.register_buffer("feature_std", torch.ones(TINY_FEATURE_DIM))

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """Features before standardisation (what the standardisation is measured on)."""
        return torch.flatten(self.pool(self.features(images)), 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (self.pooled(images) - self.feature_mean) / self.feature_std


def seeded_tiny_encoder(seed: int) -> TinyPatchEncoder:
    """A TinyPatchEncoder with Kaiming-normal convolutions and zero biases drawn from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    model = TinyPatchEncoder()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
                module.weight.copy_(
                    torch.randn(module.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5
                )
                module.bias.zero_()
    return model.eval()


def tiny_transform() -> PatchTransform:
    """uint8 RGB patch (H, W, 3) → (3, 64, 64) tensor: bilinear resize, (x/255 - 0.5) / 0.25."""
    return PatchTransform(TINY_INPUT_SIZE, TINY_MEAN, TINY_STD, "bilinear")


def load_tiny_encoder(device: str | torch.device = "cpu", weights_dir: str | Path | None = None) -> Encoder:
    """The shipped tiny encoder as ``Encoder(model, transform, feature_dim)`` (model in eval mode).

    Also available as ``attnmap.wsi.encoders.load_encoder("attnmap:tiny")``.
    """
    from safetensors.torch import load_file

    path = require_bundled(
        Path(weights_dir or WEIGHTS_DIR) / WEIGHTS_NAME,
        "tiny encoder weights",
        "python -m attnmap.data.tiny_encoder",
    )
    model = TinyPatchEncoder()
    model.load_state_dict(load_file(str(path)), strict=True)
    return Encoder(model.eval().to(device), tiny_transform(), TINY_FEATURE_DIM)


register_encoder("attnmap:tiny", lambda: tuple(load_tiny_encoder()))


def _tissue_patches(
    slide_path: Path, patch_size: int, per_slide: int, rng: np.random.Generator
) -> np.ndarray:
    """Random level-0 tissue patches (uint8, n×p×p×3) of a synthetic slide, by its stored tissue mask."""
    import tifffile

    from attnmap.data.synthetic_slides import load_masks
    from attnmap.evaluate.mil_localisation import patch_mask_fractions

    image = tifffile.imread(slide_path, level=0)
    tissue, _, downsample = load_masks(slide_path)
    ys, xs = np.mgrid[
        0 : image.shape[0] - patch_size + 1 : patch_size, 0 : image.shape[1] - patch_size + 1 : patch_size
    ]
    coords = np.stack([xs.ravel(), ys.ravel()], 1)
    coords = coords[patch_mask_fractions(coords, patch_size, tissue, downsample) >= 0.5]
    chosen = coords[rng.choice(len(coords), size=min(per_slide, len(coords)), replace=False)]
    return np.stack([image[y : y + patch_size, x : x + patch_size] for x, y in chosen])


def fit_standardisation(model: TinyPatchEncoder, patches: np.ndarray) -> None:
    """Set the feature_mean / feature_std buffers from uint8 patches (n, p, p, 3), in place."""
    transform = tiny_transform()
    batch = torch.stack([transform(patch) for patch in patches])
    with torch.inference_mode():
        pooled = model.pooled(batch).double()
    model.feature_mean.copy_(pooled.mean(0).float())
    model.feature_std.copy_(pooled.std(0).clamp_min(1e-3).float())


def build_tiny_encoder(
    out_dir: str | Path, seed: int = 0, n_slides: int = 4, patches_per_slide: int = 256
) -> Path:
    """Make the shipped weights: seeded convolutions + standardisation on synthetic-slide patches.

    Writes ``tiny_encoder.safetensors`` and ``tiny_encoder.json`` (recipe, seed, checksum) into
    ``out_dir`` and returns the weights path.
    """
    from safetensors.torch import save_file

    from attnmap.data.synthetic_slides import make_slide
    from attnmap.provenance import model_checksum, provenance

    if n_slides < 1 or patches_per_slide < 2:
        raise InputError("need at least one slide and two patches per slide to measure the standardisation")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = seeded_tiny_encoder(seed)
    rng = np.random.default_rng(seed)
    patches = []
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(n_slides):
            slide = make_slide(
                Path(tmp) / f"fit_{index}.tif",
                seed=10_000 + seed * 100 + index,
                size=(2048, 2048),
                tumour=index % 2 == 0,
            )
            patches.append(_tissue_patches(slide.path, 128, patches_per_slide, rng))
    fit_standardisation(model, np.concatenate(patches))
    weights_path = out_dir / WEIGHTS_NAME
    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    record = provenance(
        method="tiny_encoder",
        parameters={"seed": seed, "n_slides": n_slides, "patches_per_slide": patches_per_slide},
        model=state,
        model_name="attnmap:tiny",
    )
    save_file(state, str(weights_path), metadata=record)
    recipe = {
        **record,
        "architecture": "Conv3x3(3-16,s1)-ReLU-Conv3x3(16-32,s2)-ReLU-Conv3x3(32-64,s2)-ReLU-"
        "Conv3x3(64-64,s2)-ReLU-GlobalAvgPool, then (x - feature_mean) / feature_std",
        "input": f"RGB patch resized (bilinear) to {TINY_INPUT_SIZE}x{TINY_INPUT_SIZE}, (x/255 - 0.5) / 0.25",
        "feature_dim": TINY_FEATURE_DIM,
        "how_made": "convolutions: Kaiming-normal (fan_in, ReLU gain) from torch.Generator(seed), "
        "zero biases; "
        "feature_mean/std: measured on random 128-px level-0 tissue patches of synthetic slides "
        "(make_slide seeds 10000 + 100*seed + i, 2048x2048, tumour on even i); no labels used",
        "command": "python -m attnmap.data.tiny_encoder --out src/attnmap/data/weights --seed " + str(seed),
    }
    recipe["weights_sha256"] = model_checksum(weights_path)  # the file's own checksum, beside it
    (out_dir / RECORD_NAME).write_text(json.dumps(recipe, indent=2, sort_keys=True) + "\n")
    return weights_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Rebuild the bundled tiny patch encoder weights.")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(build_tiny_encoder(args.out, seed=args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
