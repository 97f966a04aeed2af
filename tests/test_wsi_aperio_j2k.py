"""Aperio SVS files whose tiles are JPEG 2000 (compression 33003: YCbCr, 33005: RGB), as older Aperio
scanners write them: read through OpenSlide with their pixel size, and segmented like any slide.

The files are built here tile by tile (tifffile writes the codestreams as given; imagecodecs encodes
them), so the test needs no downloaded slide.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from attnmap.wsi import open_slide
from attnmap.wsi.slide import OpenSlideSlide
from attnmap.wsi.tissue import segment_tissue

TILE = 256
DESCRIPTION = (
    "Aperio Image Library v12.0.15\r\n{w}x{h} [0,0 {w}x{h}] ({t}x{t}) J2K/KDU Q=70|AppMag = 20|MPP = 0.4990"
)


def stained_image(width: int, height: int, seed: int) -> np.ndarray:
    """White glass with one textured pink ellipse of tissue."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    tissue = ((xx - width / 2) / (0.3 * width)) ** 2 + ((yy - height / 2) / (0.3 * height)) ** 2 <= 1
    image = np.full((height, width, 3), 242, np.uint8)
    pink = np.array([205.0, 115.0, 165.0]) + rng.normal(0, 15, (height, width, 1))
    image[tissue] = np.clip(pink[tissue], 0, 255).astype(np.uint8)
    return image


def rgb_to_ycbcr(tile: np.ndarray) -> np.ndarray:
    """Full-range BT.601 (JFIF), the YCbCr of Aperio's 33003 codestreams."""
    r, g, b = (tile[..., i].astype(np.float64) for i in range(3))
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    return np.clip(np.round(np.stack([y, cb, cr], axis=-1)), 0, 255).astype(np.uint8)


def write_aperio_j2k(path: Path, image: np.ndarray, compression: int) -> Path:
    """A two-level Aperio SVS with lossless JPEG 2000 tiles (levels as top-level pages)."""
    import imagecodecs
    import tifffile

    def tiles(level: np.ndarray):
        for y in range(0, level.shape[0], TILE):
            for x in range(0, level.shape[1], TILE):
                tile = np.full((TILE, TILE, 3), 255, np.uint8)
                part = level[y : y + TILE, x : x + TILE]
                tile[: part.shape[0], : part.shape[1]] = part
                if compression == 33003:
                    tile = rgb_to_ycbcr(tile)
                yield imagecodecs.jpeg2k_encode(
                    tile, level=None, codecformat="j2k", reversible=True, mct=False
                )

    height, width = image.shape[:2]
    reduced = image.reshape(height // 4, 4, width // 4, 4, 3).mean(axis=(1, 3)).round().astype(np.uint8)
    with tifffile.TiffWriter(path) as tif:
        for index, level in enumerate((image, reduced)):
            tif.write(
                tiles(level),
                shape=level.shape,
                dtype="uint8",
                tile=(TILE, TILE),
                compression=compression,
                photometric="rgb",
                subfiletype=0 if index == 0 else 1,
                description=DESCRIPTION.format(w=width, h=height, t=TILE) if index == 0 else None,
                metadata=None,
            )
    return path


@pytest.mark.parametrize(("compression", "tolerance"), [(33005, 0), (33003, 2)])
def test_aperio_jpeg2000_slide(tmp_path, compression, tolerance):
    image = stained_image(2048, 1536, seed=compression)
    path = write_aperio_j2k(tmp_path / f"j2k_{compression}.svs", image, compression)
    with open_slide(path) as slide:
        assert isinstance(slide, OpenSlideSlide)
        assert slide.level_dimensions == ((2048, 1536), (512, 384))
        assert slide.mpp == pytest.approx(0.499)
        region = slide.read_region((700, 500), 0, (300, 260))
        # lossless RGB tiles decode exactly; YCbCr ones within the colour conversion's rounding
        difference = np.abs(region.astype(int) - image[500:760, 700:1000].astype(int))
        assert difference.max() <= tolerance
        tissue = segment_tissue(slide, a_t=1, progress=False)
    assert len(tissue.contours) == 1
    found = tissue.mask(level=1)
    expected = segment_reference(image[::4, ::4])
    overlap = np.count_nonzero(found & expected) / np.count_nonzero(found | expected)
    assert overlap > 0.95


def segment_reference(image: np.ndarray) -> np.ndarray:
    """The planted tissue: pixels darker than the glass (the ellipse), at the given image's size."""
    return image.mean(axis=-1) < 230
