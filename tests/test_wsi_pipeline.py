"""The `wsi run` pipeline on one slide: each stage's output, provenance, skipping, resuming, config errors."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from PIL import Image
from synthetic_slide_files import write_changed_config, write_clam_checkpoint, write_pipeline_setup

from attnmap.errors import InputError
from attnmap.io_utils import TEMP_MARKER, atomic_path, read_png_text
from attnmap.provenance import model_checksum
from attnmap.wsi.pipeline import run_slide
from attnmap.wsi.pipeline.config import load_config, read_slide_list
from attnmap.wsi.pipeline.legend import heatmap_title
from attnmap.wsi.pipeline.outputs import STAGES, SlideOutputs
from attnmap.wsi.pipeline.stage_files import load_blockmap


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pipeline_setup(tmp_path_factory.mktemp("pipeline"), n_slides=2)


def _config(setup: Path, tmp_path: Path, **sections: dict) -> object:
    return load_config(write_changed_config(setup, tmp_path / "out", **sections))


def _expected_attention(config, slide_path: str) -> dict:
    """Every stage recomputed directly with the public API, for comparison with the pipeline's files."""
    from attnmap.mil import infer_bag, load_clam
    from attnmap.wsi.encoders import load_encoder
    from attnmap.wsi.features import extract_features
    from attnmap.wsi.patching import patch_grid
    from attnmap.wsi.slide import open_slide
    from attnmap.wsi.tissue import segment_tissue

    slide = open_slide(slide_path)
    seg = config.segmentation
    tissue = segment_tissue(
        slide,
        level=seg.level,
        sthresh=seg.sthresh,
        mthresh=seg.mthresh,
        close=seg.close,
        a_t=seg.a_t,
        a_h=seg.a_h,
        max_n_holes=seg.max_n_holes,
    )
    coords = patch_grid(slide, tissue, patch_size=64, step=64, level=0)
    encoder = load_encoder(config.features.encoder, input_size=32)
    features = extract_features(slide, coords, encoder, patch_size=64, batch_size=7, progress=False)
    bag = infer_bag(load_clam(config.model.checkpoint), features)
    return {"slide": slide, "tissue": tissue, "coords": coords, "features": features, "bag": bag}


def test_run_slide_writes_every_stage_as_the_api_computes_it(setup: Path, tmp_path: Path) -> None:
    from attnmap.wsi.heatmap import HeatmapStyle, render_heatmap

    config = _config(setup, tmp_path, heatmap={"tiff": True, "save_original": True})
    entry = read_slide_list(config)[0]
    result = run_slide(entry, config)
    assert result["stages"] == dict.fromkeys(STAGES, True)
    out = SlideOutputs(Path(config.run.output_dir), entry.slide_id)
    expected = _expected_attention(config, entry.path)

    with h5py.File(out.patches, "r") as handle:
        np.testing.assert_array_equal(handle["coords"][()], expected["coords"])
        attrs = handle["coords"].attrs
        assert (attrs["patch_size"], attrs["patch_level"], attrs["name"]) == (64, 0, entry.slide_id)
        assert list(attrs["level_dim"]) == [1024, 768]
    with h5py.File(out.features_h5, "r") as handle:
        np.testing.assert_allclose(handle["features"][()], expected["features"], atol=1e-6)
        assert handle.attrs["model"] == config.features.encoder and handle.attrs["model_sha256"]
    assert out.features_pt.is_file()
    bag = expected["bag"]
    with h5py.File(out.named("blockmap.h5"), "r") as handle:
        assert handle["attention_scores"].shape == (len(expected["coords"]), 1)
        np.testing.assert_allclose(handle["attention_scores"][:, 0], bag.scores("raw"), rtol=1e-5, atol=1e-6)
        assert handle.attrs["model_sha256"] == model_checksum(config.model.checkpoint)
        assert int(handle.attrs["prediction"]) == bag.prediction and int(handle.attrs["patch_size"]) == 64
    assert result["prediction"] == bag.prediction
    np.testing.assert_allclose(result["probabilities"], np.asarray(bag.probs).reshape(-1), rtol=1e-5)
    assert result["prediction_name"] == ["normal", "tumour"][bag.prediction]

    heatmap = np.asarray(Image.open(out.named("heatmap.png")))
    with h5py.File(out.named("blockmap.h5"), "r") as handle:
        stored_scores = handle["attention_scores"][:, 0].astype(np.float64)
    drawn = render_heatmap(
        expected["slide"],
        expected["coords"],
        stored_scores,
        HeatmapStyle(vis_level=1, alpha=0.5),
        patch_size=64,
        tissue=expected["tissue"],
    )
    np.testing.assert_array_equal(heatmap, drawn)
    text = read_png_text(out.named("heatmap.png"))
    assert text["method"] == "clam_heatmap" and json.loads(text["parameters"])["heatmap"]["alpha"] == 0.5
    assert np.asarray(Image.open(out.named("original.png"))).shape == heatmap.shape

    import openslide

    tiff = openslide.OpenSlide(str(out.named("heatmap.tif")))
    assert tiff.level_dimensions[0] == (1024, 768) and tiff.level_count >= 2
    assert tiff.properties["openslide.mpp-x"] == "0.5"
    top = sorted((out.heatmap_dir / "topk_high_attention").glob("*.png"))
    bottom = sorted((out.heatmap_dir / "bottomk_low_attention").glob("*.png"))
    assert (len(top), len(bottom)) == (3, 2)
    best = int(np.argmax(stored_scores))
    assert top[0].name.startswith(f"0_{entry.slide_id}_x_{expected['coords'][best][0]}_y_")
    prediction = json.loads(out.prediction.read_text())
    assert prediction["provenance"]["attnmap_version"] and prediction["n_patches"] == len(expected["coords"])
    # CLAM-SB has one attention branch for every class: the PNG's title said "CLAM attention for
    # normal" (branch 0 read as a class) on a slide predicted tumour
    block = load_blockmap(out.named("blockmap.h5"))
    assert block["n_branches"] == 1
    title = heatmap_title(entry.slide_id, block, ["normal", "tumour"])
    assert " · CLAM attention · " in title and "attention for" not in title


def test_finished_stages_are_skipped_and_missing_ones_redone(setup: Path, tmp_path: Path) -> None:
    config = _config(setup, tmp_path)
    entry = read_slide_list(config)[1]
    first = run_slide(entry, config)
    out = SlideOutputs(Path(config.run.output_dir), entry.slide_id)
    heatmap_bytes = np.asarray(Image.open(out.named("heatmap.png")))
    assert run_slide(entry, config)["stages"] == dict.fromkeys(STAGES, False)
    # an interrupted run: the heatmap and prediction are missing, a half-written temporary is left
    out.named("heatmap.png").unlink()
    out.prediction.unlink()
    leftover = out.features_h5.with_name(f".{entry.slide_id}{TEMP_MARKER}abc.h5")
    leftover.write_bytes(b"half")
    resumed = run_slide(entry, config)
    assert resumed["stages"] == {**dict.fromkeys(STAGES, False), "heatmap": True}
    assert not leftover.exists()
    assert resumed["probabilities"] == first["probabilities"]
    np.testing.assert_array_equal(np.asarray(Image.open(out.named("heatmap.png"))), heatmap_bytes)
    out.named("blockmap.h5").write_bytes(b"corrupt")  # unreadable: the attention stage runs again
    out.prediction.unlink()
    assert run_slide(entry, config)["stages"]["attention"] is True


def test_multi_branch_model_uses_the_predicted_class_branch(setup: Path, tmp_path: Path) -> None:
    from attnmap.mil import attention_scores, load_clam
    from attnmap.wsi.features import load_features

    checkpoint = write_clam_checkpoint(tmp_path / "clam_mb.pt", seed=4, multi_branch=True)
    config = _config(
        setup, tmp_path, model={"checkpoint": str(checkpoint)}, sampling={"top_k": 0, "bottom_k": 0}
    )
    entry = read_slide_list(config)[0]
    result = run_slide(entry, config)
    out = SlideOutputs(Path(config.run.output_dir), entry.slide_id)
    features, _ = load_features(out.features_h5)
    model = load_clam(checkpoint)
    with h5py.File(out.named("blockmap.h5"), "r") as handle:
        stored = handle["attention_scores"][:, 0]
    assert result["attention_branch"] == result["prediction"]
    np.testing.assert_allclose(
        stored, attention_scores(model, features, branch=result["prediction"]), rtol=1e-5
    )
    other = attention_scores(model, features, branch=1 - result["prediction"])
    assert not np.allclose(stored, other)
    block = load_blockmap(out.named("blockmap.h5"))
    assert block["n_branches"] == 2
    shown = ["normal", "tumour"][result["prediction"]]
    assert f" · CLAM attention for {shown} · " in heatmap_title(entry.slide_id, block, ["normal", "tumour"])
    assert not (out.heatmap_dir / "topk_high_attention").exists()


def test_overlapping_heatmap_uses_blockmap_scores_as_reference(setup: Path, tmp_path: Path) -> None:
    from attnmap.wsi.heatmap import HeatmapStyle, render_heatmap
    from attnmap.wsi.pipeline.stage_files import load_blockmap, load_tissue
    from attnmap.wsi.slide import open_slide

    config = _config(setup, tmp_path, heatmap={"overlap": 0.5}, sampling={"top_k": 0, "bottom_k": 0})
    entry = read_slide_list(config)[0]
    run_slide(entry, config)
    out = SlideOutputs(Path(config.run.output_dir), entry.slide_id)
    block, dense = load_blockmap(out.named("blockmap.h5")), load_blockmap(out.named("overlap_blockmap.h5"))
    assert len(dense["coords"]) > 2 * len(block["coords"])
    assert 32 in set(np.diff(np.unique(dense["coords"][:, 0])).tolist())  # step = 64 × (1 - 0.5)
    drawn = render_heatmap(
        open_slide(entry.path),
        dense["coords"],
        dense["scores"],
        HeatmapStyle(vis_level=1, alpha=0.5, overlap=0.5),
        patch_size=64,
        tissue=load_tissue(out.tissue),
        reference_scores=block["scores"],
    )
    np.testing.assert_array_equal(np.asarray(Image.open(out.named("heatmap.png"))), drawn)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_a_run_on_cuda_draws_the_heatmap_of_the_cpu_run(setup: Path, tmp_path: Path, precision: str) -> None:
    runs = {}
    for device in ("cpu", "cuda"):
        folder = tmp_path / device
        folder.mkdir()
        config = _config(
            setup,
            folder,
            run={"device": device},
            features={"precision": precision if device == "cuda" else "float32"},
            heatmap={"overlap": 0.5},
        )
        entry = read_slide_list(config)[0]
        assert all(run_slide(entry, config)["stages"].values())
        out = SlideOutputs(Path(config.run.output_dir), entry.slide_id)
        with h5py.File(out.named("blockmap.h5"), "r") as handle:
            scores = handle["attention_scores"][()]
        runs[device] = (scores, np.asarray(Image.open(out.named("heatmap.png"))))
    (cpu_scores, cpu_png), (gpu_scores, gpu_png) = runs["cpu"], runs["cuda"]
    assert gpu_png.shape == cpu_png.shape
    # attention of the CPU float32 features: TF32 convolutions (cuDNN's default) or bfloat16 features
    # move the raw scores by a small fraction of their range
    tolerance = 0.02 if precision == "float32" else 0.05
    np.testing.assert_allclose(gpu_scores, cpu_scores, rtol=0, atol=tolerance * np.ptp(cpu_scores))


def test_a_slide_without_tissue_is_a_clear_error(setup: Path, tmp_path: Path) -> None:
    import tifffile

    blank = tmp_path / "blank.tif"
    tifffile.imwrite(blank, np.full((512, 512, 3), 250, np.uint8), tile=(256, 256), photometric="rgb")
    config = _config(setup, tmp_path, segmentation={"level": 0}, heatmap={"vis_level": 0})
    with pytest.raises(InputError, match="no tissue patches found"):
        run_slide(blank, config)


def test_no_patches_says_whether_tissue_or_the_patch_size_is_the_cause(setup: Path, tmp_path: Path) -> None:
    import tifffile

    blank = tmp_path / "blank.tif"
    tifffile.imwrite(blank, np.full((512, 512, 3), 250, np.uint8), tile=(256, 256), photometric="rgb")
    config = _config(setup, tmp_path, segmentation={"level": 0}, heatmap={"vis_level": 0})
    with pytest.raises(InputError, match=r"kept no tissue region .* a_t=0.05 × 512² = 13107 level-0 px"):
        run_slide(blank, config)
    config = _config(setup, tmp_path, patching={"patch_size": 4096})
    with pytest.raises(InputError, match=r"no 4096-px patch at level 0 fits its \d+ tissue region"):
        run_slide(setup.parent / "slides" / "slide_0.tif", config)
    tiny = tmp_path / "tiny.png"  # tissue only, 50×40: smaller than a 64-px patch
    Image.fromarray(tifffile.imread(setup.parent / "slides" / "slide_0.tif")[300:340, 400:450]).save(tiny)
    config = _config(setup, tmp_path, segmentation={"level": 0, "a_t": 100}, heatmap={"vis_level": 0})
    with pytest.raises(InputError, match=r"segmentation.a_t: 100 asks for tissue regions of at least "
                       r"26214400 level-0 px \(a_t × 512²\), more than the whole 50×40 slide: lower "
                       r"segmentation.a_t$"):
        run_slide(tiny, config)  # CLAM's default on a plain image
    segmentation = {"level": 0, "a_t": 0.0, "a_h": 0.0}
    config = _config(setup, tmp_path, segmentation=segmentation, patching={"padding": False},
                     heatmap={"vis_level": 0})  # the image has no level 1: refused before patching
    with pytest.raises(InputError, match=r"the slide is 50×40 px at level 0, smaller than one 64-px patch, "
                       r"with patching.padding: false: use a smaller patching.patch_size or "
                       r"patching.padding: true"):
        run_slide(tiny, config)
    config = _config(setup, tmp_path, segmentation=segmentation, heatmap={"vis_level": 0})
    assert run_slide(tiny, config)["n_patches"] == 1  # padded: one patch, as CLAM keeps it


def test_no_tissue_under_otsu_names_otsus_threshold_not_sthresh(setup: Path, tmp_path: Path) -> None:
    """With use_otsu the threshold is Otsu's: naming sthresh, and advising to lower it, pointed at a
    value the segmentation never used."""
    import tifffile

    blank = tmp_path / "blank.tif"
    tifffile.imwrite(blank, np.full((512, 512, 3), 250, np.uint8), tile=(256, 256), photometric="rgb")
    with pytest.raises(InputError, match=r"sthresh=8 acts only without use_otsu"):  # given both: not dropped
        _config(setup, tmp_path, segmentation={"use_otsu": True})
    segmentation = {"level": 0, "use_otsu": True, "sthresh": None}
    config = _config(setup, tmp_path, segmentation=segmentation, heatmap={"vis_level": 0})
    with pytest.raises(InputError, match=r"kept no tissue region \(\w+ above Otsu's threshold") as error:
        run_slide(blank, config)
    assert "sthresh" not in str(error.value) and "use_otsu: false" in str(error.value)


def test_an_abmil_checkpoint_from_mil_train_runs_the_slide(setup: Path, tmp_path: Path) -> None:
    """`mil train --model abmil` writes ABMIL checkpoints; `wsi run` refused them as "not CLAM"."""
    import torch

    from attnmap.mil import ABMIL, infer_bag

    torch.manual_seed(0)
    torch.save(ABMIL(embed_dim=8, n_classes=2).state_dict(), tmp_path / "abmil.pt")
    config = _config(setup, tmp_path, model={"checkpoint": str(tmp_path / "abmil.pt")})
    result = run_slide(setup.parent / "slides" / "slide_0.tif", config)
    outputs = SlideOutputs(tmp_path / "out", "slide_0")
    with h5py.File(outputs.features_h5, "r") as handle:
        features = handle["features"][()]
    with h5py.File(outputs.named("blockmap.h5"), "r") as handle:
        scores = handle["attention_scores"][()].ravel()
    model = ABMIL(embed_dim=8, n_classes=2)
    model.load_state_dict(torch.load(tmp_path / "abmil.pt", weights_only=True))
    expected = infer_bag(model, features)
    assert result["prediction"] == expected.prediction
    np.testing.assert_allclose(scores, expected.scores("raw"), rtol=1e-5, atol=1e-6)
    assert outputs.named("heatmap.png").is_file()


def test_an_encoder_that_does_not_fit_the_model_fails_before_extracting(setup: Path, tmp_path: Path) -> None:
    """8-d model, 64-d encoder: said before any feature is computed (it came after the slide's
    features were extracted and stored, for every slide)."""
    with pytest.raises(InputError, match=r"^features.encoder attnmap:tiny gives 64-d features but .* 8-d"):
        _config(setup, tmp_path, features={"encoder": "attnmap:tiny", "input_size": None})  # at load
    config = _config(setup, tmp_path)
    config.features.encoder, config.features.input_size = "attnmap:tiny", None  # the API, unchecked
    with pytest.raises(InputError, match=r"attnmap:tiny gives 64-d features but .* expects 8-d"):
        run_slide(setup.parent / "slides" / "slide_0.tif", config)
    assert not SlideOutputs(tmp_path / "out", "slide_0").features_h5.exists()


def test_atomic_path_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out" / "file.h5"
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_bytes(b"partial")
        raise RuntimeError("interrupted")
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_config_errors_name_the_problem(setup: Path, tmp_path: Path) -> None:
    raw = yaml.safe_load(setup.read_text())

    def load(**changes: dict) -> None:
        data = json.loads(json.dumps(raw))
        for section, values in changes.items():
            if values is None:
                data.pop(section)
            else:
                data.setdefault(section, {}).update(values)
        path = setup.parent / "bad.yaml"
        path.write_text(yaml.safe_dump(data))
        read_slide_list(load_config(path))

    with pytest.raises(InputError, match="unknown configuration section.*heatmaps"):
        load(heatmaps={"alpha": 1})
    with pytest.raises(InputError, match="patching.patchsize: unknown key; known: patch_size"):
        load(patching={"patchsize": 1})
    with pytest.raises(FileNotFoundError, match="model.checkpoint"):
        load(model={"checkpoint": "missing.pt"})
    with pytest.raises(InputError, match="model.checkpoint is required"):
        load(model=None)
    with pytest.raises(InputError, match="features.encoder '.*no_such_encoder.pt' is neither"):
        load(features={"encoder": "no_such_encoder.pt"})
    with pytest.raises(InputError, match="heatmap.overlap"):
        load(heatmap={"overlap": 1.5})
    with pytest.raises(InputError, match="run.device"):
        load(run={"device": "tpu"})
    with pytest.raises(FileNotFoundError, match="slide"):
        load(slides={"extension": ".svs"})
    (setup.parent / "dup.csv").write_text("slide_id\nslide_0\nslide_0\n")
    with pytest.raises(InputError, match="more than once: slide_0"):
        load(slides={"csv": "dup.csv"})
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "broken.yaml").write_text("slides: [unclosed")
    with pytest.raises(InputError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml")


def test_documented_example_config_lists_every_key_with_its_default(setup: Path, tmp_path: Path) -> None:
    import dataclasses

    from attnmap.wsi.pipeline.config import PipelineConfig, config_from_dict

    example = Path(__file__).parents[1] / "docs" / "wsi_config_example.yaml"
    raw = yaml.safe_load(example.read_text())
    defaults = json.loads(json.dumps(PipelineConfig().to_dict()))  # tuples as YAML's lists
    assert {section: set(values) for section, values in raw.items()} == {
        section: set(values) for section, values in defaults.items()
    }
    required = {("slides", "csv"), ("model", "checkpoint")}
    for section, values in raw.items():
        for key, value in values.items():
            if (section, key) not in required:
                assert value == defaults[section][key], f"{section}.{key}"
    raw["slides"]["csv"] = str(setup.parent / "slides.csv")
    # the example's encoder (resnet50_trunc) gives 1024-d features: a model that takes them
    raw["model"]["checkpoint"] = str(write_clam_checkpoint(tmp_path / "clam1024.pt", embed_dim=1024))
    config = config_from_dict(raw, base_dir=tmp_path)
    assert json.loads(json.dumps(dataclasses.asdict(config.heatmap))) == defaults["heatmap"]


def test_a_webp_image_runs_like_the_same_png(setup: Path, tmp_path: Path) -> None:
    """Plain images are slides; WebP was refused as "not a supported or intact slide"."""
    import tifffile

    pixels = tifffile.imread(setup.parent / "slides" / "slide_0.tif")
    rows = {}
    for suffix in (".png", ".webp"):
        path = tmp_path / f"plain{suffix}"
        Image.fromarray(pixels).save(path, lossless=True)
        config = _config(setup, tmp_path / suffix[1:], segmentation={"level": 0}, heatmap={"vis_level": 0})
        rows[suffix] = run_slide(path, config)
        assert (tmp_path / suffix[1:] / "out" / "heatmaps" / "plain" / "plain_heatmap.png").is_file()
    assert rows[".webp"]["n_patches"] == rows[".png"]["n_patches"] > 0
    assert rows[".webp"]["probabilities"] == rows[".png"]["probabilities"]


@pytest.mark.parametrize("shape", ["row", "column"])
def test_a_slide_one_pixel_thin_is_refused_as_too_thin_not_for_a_t(
    setup: Path, tmp_path: Path, shape: str
) -> None:
    """A 1-px-tall (or wide) slide found no tissue even with a_t: 0 (an outline one pixel thin has no
    area), and the error advised lowering a_t, which cannot help: it must say the slide is too thin."""
    import tifffile

    pixels = tifffile.imread(setup.parent / "slides" / "slide_0.tif")
    strip = pixels[320:321, 300:500] if shape == "row" else pixels[250:450, 420:421]
    thin = tmp_path / "thin.png"
    Image.fromarray(np.ascontiguousarray(strip)).save(thin)
    height, width = strip.shape[:2]
    segmentation = {"level": 0, "a_t": 0.0, "a_h": 0.0, "use_otsu": True, "sthresh": None}
    config = _config(setup, tmp_path, segmentation=segmentation, heatmap={"vis_level": 0})
    with pytest.raises(InputError) as error:
        run_slide(thin, config)
    message = str(error.value)
    assert "too thin" in message and f"{width}×{height} px" in message and "a_t" not in message, message
    assert "\n" not in message
