"""Tissue on greyscale slides: the darkness channel, chosen with a warning when saturation is flat."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from cli_runner import run_cli
from synthetic_slide_files import write_test_slide

from attnmap.errors import InputError
from attnmap.wsi import open_slide, segment_tissue
from attnmap.wsi.tissue_channel import is_colourless


def write_grey_slide(path: Path, seed: int, samples: int = 3, compression: str = "jpeg") -> np.ndarray:
    """A greyscale brightfield slide (glass at 236, textured tissue at 140-200) of 2048×1536 px, two
    levels, as RGB with R = G = B (JPEG: its rounding leaves the samples a level or two apart) or as
    one sample a pixel; returns the planted tissue mask (level 0)."""
    rng = np.random.default_rng(seed)
    height, width = 1536, 2048
    yy, xx = np.mgrid[0:height, 0:width]
    planted = np.zeros((height, width), dtype=bool)
    for cx, cy, rx, ry in ((600, 700, 380, 300), (1450, 800, 330, 420)):
        planted |= ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
    grey = np.clip(236 + rng.normal(0, 2.0, (height, width)), 0, 255)
    tissue = 170 + rng.normal(0, 15.0, (height, width))
    tissue[rng.random((height, width)) < 0.02] = 70  # nuclei
    grey[planted] = np.clip(tissue[planted], 0, 255)
    level0 = grey.round().astype(np.uint8)
    level1 = level0.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3)).round().astype(np.uint8)
    with tifffile.TiffWriter(path) as tif:
        for index, level in enumerate((level0, level1)):
            image = np.repeat(level[:, :, None], 3, axis=2) if samples == 3 else level
            tif.write(image, tile=(256, 256), compression=compression,
                      photometric="rgb" if samples == 3 else "minisblack", subfiletype=1 if index else 0,
                      resolution=(2e4 / 2**index, 2e4 / 2**index), resolutionunit="CENTIMETER")
    return planted


def overlap(tissue, planted: np.ndarray) -> float:
    """Intersection over union of the tissue found (level 0) and the planted tissue."""
    found = tissue.mask(0)
    return float((found & planted).sum() / (found | planted).sum())


@pytest.mark.parametrize(("samples", "compression"), [(3, "jpeg"), (1, "zlib")])
def test_a_grey_slide_is_segmented_by_darkness_with_a_warning(tmp_path: Path, samples: int, compression: str):
    path = tmp_path / "grey.tif"
    planted = write_grey_slide(path, seed=3, samples=samples, compression=compression)
    with open_slide(path) as slide:
        rgb = slide.read_region((0, 0), 1, slide.level_dimensions[1])
        assert is_colourless(rgb)
        with pytest.warns(UserWarning) as caught:
            tissue = segment_tissue(slide, a_t=1, a_h=1)
        assert len(caught) == 1
        message = str(caught[0].message)
        assert "no colour" in message and "darkness" in message and "channel" in message
        assert "\n" not in message
        assert tissue.parameters["channel"] == "darkness"
        assert len(tissue.contours) == 2
        assert overlap(tissue, planted) > 0.9

        with warnings.catch_warnings():
            warnings.simplefilter("error")  # named: no warning, and CLAM's saturation finds nothing
            assert segment_tissue(slide, a_t=1, a_h=1, channel="saturation").contours == []
            named = segment_tissue(slide, a_t=1, a_h=1, channel="darkness")
        assert named.parameters["channel"] == "darkness"
        assert [c.outer.tolist() for c in named.contours] == [c.outer.tolist() for c in tissue.contours]


def test_a_colour_slide_keeps_clams_saturation(tmp_path: Path):
    path = write_test_slide(tmp_path / "pink.tif", seed=1)
    with open_slide(path) as slide:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            default = segment_tissue(slide, level=0, a_t=0.05, a_h=0.01)
            darkness = segment_tissue(slide, level=0, a_t=0.05, a_h=0.01, channel="darkness")
        assert default.parameters["channel"] == "saturation" and default.contours
        # stained tissue on white glass is darker than the glass too: both find the same tissue
        both = (default.mask(0) & darkness.mask(0)).sum() / (default.mask(0) | darkness.mask(0)).sum()
        assert both > 0.9
        with pytest.raises(InputError, match="unknown segmentation channel 'value'"):
            segment_tissue(slide, channel="value")


def test_the_channel_reaches_the_config_the_cli_and_the_fingerprint(tmp_path: Path, capsys):
    from attnmap.wsi.pipeline.config import PipelineConfig, SlideEntry, config_from_dict
    from attnmap.wsi.pipeline.fingerprint import StageFingerprints

    path = tmp_path / "grey.tif"
    planted = write_grey_slide(path, seed=4)
    entry = SlideEntry(str(path), "grey")
    inputs = {}
    for channel in (None, "saturation", "darkness"):
        config = PipelineConfig()
        config.segmentation.channel = channel
        inputs[channel] = StageFingerprints(entry, config).tissue
    assert "channel" not in inputs[None].inputs["segmentation"]  # unset: earlier runs' tissue kept
    assert len({fp.value for fp in inputs.values()}) == 3
    with pytest.raises(InputError, match="segmentation.channel"):
        config_from_dict({"segmentation": {"channel": "hue"}})

    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="no colour") as caught:
        code, printed, err = run_cli(capsys, "wsi", "segment", path, "--out", out, "--a-t", 1, "--a-h", 1)
    assert code == 0 and len(caught) == 1, err
    saved = json.loads((out / "tissue" / "grey.json").read_text())
    assert saved["parameters"]["channel"] == "darkness" and len(saved["contours"]) == 2
    code, printed, err = run_cli(capsys, "wsi", "segment", path, "--out", out, "--a-t", 1, "--a-h", 1,
                                 "--channel", "saturation")
    assert code == 0 and "already" not in printed, printed  # a changed channel is never reused
    assert json.loads((out / "tissue" / "grey.json").read_text())["contours"] == []
    code, printed, err = run_cli(capsys, "wsi", "segment", path, "--out", out, "--a-t", 1, "--a-h", 1,
                                 "--channel", "darkness")
    assert code == 0 and "already" not in printed
    from attnmap.wsi.pipeline.stage_files import load_tissue

    assert overlap(load_tissue(out / "tissue" / "grey.json"), planted) > 0.9


def test_an_empty_tissue_found_before_the_channel_rule_is_remade(tmp_path: Path):
    from attnmap.wsi.pipeline.config import PipelineConfig, SlideEntry
    from attnmap.wsi.pipeline.outputs import SlideOutputs
    from attnmap.wsi.pipeline.stages import tissue_stage

    path = tmp_path / "grey.tif"
    write_grey_slide(path, seed=5)
    config = PipelineConfig()
    config.segmentation.a_t, config.segmentation.a_h = 1, 1
    config.run.output_dir = str(tmp_path / "out")
    entry = SlideEntry(str(path), "grey")
    outputs = SlideOutputs(tmp_path / "out", "grey")
    with open_slide(path) as slide, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tissue, reason = tissue_stage(slide, entry, config, outputs)
        assert reason is not None and tissue.contours
        assert tissue_stage(slide, entry, config, outputs)[1] is None  # intact: reused
        saved = json.loads(outputs.tissue.read_text())  # as an earlier version wrote it: empty, no channel
        del saved["parameters"]["channel"]
        saved["contours"] = []
        outputs.tissue.write_text(json.dumps(saved))
        tissue, reason = tissue_stage(slide, entry, config, outputs)
        assert reason is not None and "empty" in reason and len(tissue.contours) == 2


@pytest.mark.parametrize("noise", [0.0, 1.5])
def test_a_blank_slide_is_not_called_greyscale(tmp_path: Path, noise: float):
    """All glass has no colour either: it was warned about as "a greyscale scan" before its correct
    "no tissue" refusal, which sent the user looking for a scanner setting that was not the cause."""
    rng = np.random.default_rng(0)
    glass = np.clip(236 + rng.normal(0, noise, (1024, 1024)), 0, 255).round().astype(np.uint8)
    path = tmp_path / "blank.tif"
    tifffile.imwrite(path, np.repeat(glass[:, :, None], 3, axis=2), tile=(256, 256), photometric="rgb")
    with open_slide(path) as slide:
        assert is_colourless(slide.read_region((0, 0), 0, slide.dimensions))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            tissue = segment_tissue(slide, level=0, a_t=0.01, a_h=0.01)
    assert tissue.contours == []
