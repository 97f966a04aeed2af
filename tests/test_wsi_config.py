"""`wsi run` configuration checks: every bad value is one `InputError` naming its dotted key,
raised while loading, before any slide is touched; segmentation presets never silently win."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import yaml
from synthetic_slide_files import write_pipeline_setup

from attnmap.errors import InputError
from attnmap.wsi.heatmap import HeatmapStyle
from attnmap.wsi.pipeline.config import PipelineConfig, load_config, read_slide_list


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pipeline_setup(tmp_path_factory.mktemp("config"), n_slides=1)


def _load(setup: Path, **changes: dict):
    data = yaml.safe_load(setup.read_text())
    for section, values in changes.items():
        data.setdefault(section, {}).update(values)
    path = setup.parent / "changed.yaml"
    path.write_text(yaml.safe_dump(data))
    return read_slide_list(load_config(path)), load_config(path)


BAD_VALUES = [
    ("patching", "patch_size", "256", "valid integer"),
    ("patching", "patch_size", True, "valid integer"),
    ("patching", "patch_size", 128.5, "valid integer"),
    ("patching", "patch_size", 0, "greater than or equal to 1"),
    ("patching", "contour_check", "corner", "four_pt"),
    ("model", "class_names", "normal", "valid array"),
    ("heatmap", "cmap", "no_such_map", "unknown colour map"),
    ("heatmap", "cmap", "opencv:nope", "unknown OpenCV colour map"),
    ("heatmap", "alpha", 1.5, "less than or equal to 1"),
    ("heatmap", "vis_level", -2, "greater than or equal to -1"),
    ("heatmap", "vis_level", 7, "level 7 does not exist in slide slide_0"),
    ("heatmap", "roi", [[5000, 0], [6000, 100]], "lies outside slide slide_0 (1024×768 at level 0)"),
    ("heatmap", "canvas_color", [0, 0, 256], "less than or equal to 255"),
    ("segmentation", "preset", "tcgaa", "'tcga', 'bwh_biopsy' or 'bwh_resection'"),
    ("segmentation", "a_t", "1", "valid number"),
    ("segmentation", "mthresh", 6, "must be odd"),
    ("features", "batch_size", 0, "greater than or equal to 1"),
    ("features", "encoder", "attnmap:tiny_typo", "not an encoder attnmap knows: use one of resnet50_trunc"),
    ("features", "encoder", "timm:no_such_vit", "is not an encoder attnmap knows"),
    ("sampling", "top_k", -1, "greater than or equal to 0"),
    ("run", "device", "tpu", "auto, cpu, cuda or cuda:N"),
    ("run", "workers", "2", "valid integer"),
    # found by bench/wsi_config_sweep.py: each failed every slide (OpenCV's assertion, an exabyte
    # array), reached Dask as a ValueError, wrote the outputs into the working folder, or ran
    ("segmentation", "mthresh", 9999, "less than or equal to 255"),
    ("segmentation", "close", 10**9, "less than or equal to 255"),
    ("run", "scheduler", "not-an-address", "give tcp://HOST:PORT"),
    ("run", "output_dir", "", "at least 1 character"),
    ("model", "class_names", ["tumour", "tumour"], "names given more than once: tumour"),
]


@pytest.mark.parametrize(("section", "key", "value", "problem"), BAD_VALUES)
def test_bad_values_name_the_dotted_key(setup: Path, section: str, key: str, value, problem: str) -> None:
    with pytest.raises(InputError) as caught:
        _load(setup, **{section: {key: value}})
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{section}.{key}"), message
    assert problem in message
    assert message.count(" got ") + message.count("(got ") <= 1, message  # the value named once


def test_good_values_are_kept_exactly(setup: Path) -> None:
    _, config = _load(
        setup,
        heatmap={"cmap": "opencv:turbo", "alpha": 1, "canvas_color": [10, 20, 30], "roi": [[0, 0], [64, 64]]},
        segmentation={"preset": "bwh_biopsy", "sthresh": None, "mthresh": None, "close": None, "a_t": 1,
                      "a_h": None},
        run={"device": "cuda:1"},
    )
    assert config.heatmap.alpha == 1.0 and isinstance(config.heatmap.alpha, float)
    assert config.heatmap.style == HeatmapStyle(
        vis_level=1, cmap="opencv:turbo", alpha=1.0, canvas_color=(10, 20, 30), roi=((0, 0), (64, 64))
    )
    assert config.segmentation.resolved()["sthresh"] == 15  # the preset's
    assert config.run.device == "cuda:1"


def test_a_preset_that_disagrees_with_a_given_value_is_an_error(setup: Path) -> None:
    with pytest.raises(InputError, match=r"preset 'tcga' disagrees.*a_t=0.05 \(preset: 16\)"):
        _load(setup, segmentation={"preset": "tcga"})  # the setup gives a_t: 0.05
    _, config = _load(setup, segmentation={"preset": "tcga", "sthresh": None, "mthresh": None, "close": None,
                                           "a_t": 16, "a_h": None})
    assert config.segmentation.resolved() == {"sthresh": 8, "mthresh": 7, "close": 4, "use_otsu": False,
                                              "a_t": 16, "a_h": 4, "max_n_holes": 8}


def test_defaults_are_the_style_defaults() -> None:
    defaults = json.loads(json.dumps(PipelineConfig().to_dict()))
    style = json.loads(json.dumps(HeatmapStyle().__dict__))
    assert {key: defaults["heatmap"][key] for key in style} == style


def test_style_checks_api_values() -> None:
    with pytest.raises(InputError, match="alpha: Input should be less than or equal to 1"):
        HeatmapStyle(alpha=2)
    with pytest.raises(InputError, match="roi must be"):
        HeatmapStyle(roi=((5, 5), (0, 0)))
    assert HeatmapStyle(roi=[[0, 0], [5, 5]]).roi == ((0, 0), (5, 5))


def test_a_slide_csv_saved_by_excel_with_a_byte_order_mark_is_read(setup: Path) -> None:
    """Excel's "CSV UTF-8" starts with a BOM, which must not hide the slide_id column."""
    bom_csv = setup.parent / "bom.csv"
    bom_csv.write_text("\ufeffslide_id,label\nslide_0,1\n", encoding="utf-8")
    entries, _ = _load(setup, slides={"csv": "bom.csv"})
    assert [(entry.slide_id, entry.label) for entry in entries] == [("slide_0", "1")]


def test_the_model_checkpoint_is_read_before_any_slide(setup: Path) -> None:
    """A corrupt or foreign checkpoint, or class names that do not match its classes, stop the run
    while the config loads (they failed per slide, after tissue, patches and features were made)."""
    corrupt = setup.parent / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 not a zip" * 8)
    with pytest.raises(InputError, match=r"^model.checkpoint: cannot read checkpoint .*corrupt.pt"):
        _load(setup, model={"checkpoint": "corrupt.pt"})
    import torch

    torch.save({"linear.weight": torch.zeros(2, 2)}, setup.parent / "foreign.pt")
    with pytest.raises(InputError, match=r"^model.checkpoint .*foreign.pt: not a CLAM checkpoint"):
        _load(setup, model={"checkpoint": "foreign.pt"})
    with pytest.raises(InputError, match=r"^model.class_names has 3 name\(s\) but .*clam.pt has 2 classes"):
        _load(setup, model={"class_names": ["a", "b", "c"]})


def test_slide_ids_with_dots_get_the_extension(setup: Path) -> None:
    """TCGA ids hold a dot ("...-DX1.6B8C7E5C-..."): the extension was not appended to them, so
    every such slide was "not found"; a row naming a file with its own suffix still works."""
    import shutil

    slides = setup.parent / "slides"
    shutil.copyfile(slides / "slide_0.tif", slides / "TCGA-AA-0001-01Z-00-DX1.6B8C7E5C.tif")
    shutil.copyfile(slides / "slide_0.tif", slides / "named.tif")
    rows = ["slide_id", "TCGA-AA-0001-01Z-00-DX1.6B8C7E5C", "slide_0.tif", "named.tif"]
    (setup.parent / "dots.csv").write_text("\n".join(rows) + "\n")
    entries, _ = _load(setup, slides={"csv": "dots.csv", "extension": ".tif"})
    assert [Path(entry.path).name for entry in entries] == [
        "TCGA-AA-0001-01Z-00-DX1.6B8C7E5C.tif", "slide_0.tif", "named.tif"]
    (setup.parent / "other.csv").write_text("slide_id\nslide_0.tif\n")
    entries, _ = _load(setup, slides={"csv": "other.csv", "extension": ".svs"})  # its own suffix: as is
    assert Path(entries[0].path).name == "slide_0.tif"


@pytest.mark.parametrize("slide_id", ["sub/slide_0", "../slide_0", "..", "a\\b"])
def test_slide_ids_that_are_paths_are_refused(setup: Path, slide_id: str) -> None:
    """An id holding a folder wrote its outputs into other folders ("../x": beside the run's folders,
    where neither the viewer nor a rerun looks), or outside the output folder altogether."""
    (setup.parent / "paths.csv").write_text(f"slide_id,slide_path\n{slide_id},slide_0.tif\n")
    with pytest.raises(InputError, match="cannot hold '/'"):
        _load(setup, slides={"csv": "paths.csv"})


def test_the_roi_folder_is_checked_while_loading(setup: Path) -> None:
    """A missing ROI folder, a file in its place, or a slide without its annotation file failed each
    slide after its tissue segmentation; now the configuration (or slide list) is refused at once."""
    with pytest.raises(InputError, match=r"^patching.roi_annotations: folder not found: .*no_rois$"):
        _load(setup, patching={"roi_annotations": "no_rois"})
    with pytest.raises(InputError, match=r"^patching.roi_annotations must be a folder .*clam.pt$"):
        _load(setup, patching={"roi_annotations": "clam.pt"})
    rois = setup.parent / "rois"
    rois.mkdir(exist_ok=True)
    (rois / "other_slide.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    with pytest.raises(InputError, match=r"^patching.roi_annotations: 1 slide\(s\) have no .*: slide_0$"):
        _load(setup, patching={"roi_annotations": "rois"})
    (rois / "slide_0.geojson").write_text('{"type": "FeatureCollection", "features": [')  # cut short
    with pytest.raises(InputError, match=r"^patching.roi_annotations: cannot read annotations .*slide_0"):
        _load(setup, patching={"roi_annotations": "rois"})
    (rois / "slide_0.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    entries, config = _load(setup, patching={"roi_annotations": "rois"})
    assert config.patching.roi_annotations == str(rois) and [e.slide_id for e in entries] == ["slide_0"]


def test_fine_maps_need_a_vit_encoder_and_features_must_fit_the_model_at_load(setup: Path) -> None:
    """Fine maps with a CNN encoder failed each slide after its heatmap, and an encoder whose feature
    size is not the model's after its patches; both are now refused while the configuration loads,
    without loading encoder weights."""
    from synthetic_slide_files import write_clam_checkpoint

    write_clam_checkpoint(setup.parent / "clam1024.pt", embed_dim=1024)
    write_clam_checkpoint(setup.parent / "clam64.pt", embed_dim=64)
    fine = {"fine": {"top_k": 2}}
    # a ReLU CNN has exact fine maps by LRP-0; the attention methods need a ViT
    cnn = dict(features={"encoder": "resnet50_trunc", "input_size": None},
               model={"checkpoint": "clam1024.pt"})
    _load(setup, **cnn, heatmap=fine)
    with pytest.raises(InputError, match=r"^heatmap.fine: fine method 'transformer_attribution' needs a ViT "
                       r"encoder; TruncatedResNet50 is a CNN: use method lrp "
                       r"\(features.encoder is resnet50_trunc\)$"):
        _load(setup, **cnn, heatmap={"fine": {"top_k": 2, "method": "transformer_attribution"}})
    with pytest.raises(InputError, match=r"^heatmap.fine: fine maps need the encoder's Python model, not a "
                       r"TorchScript archive"):
        _load(setup, heatmap=fine)  # the setup's TorchScript CNN
    with pytest.raises(InputError, match=r"^features.encoder attnmap:tiny gives 64-d .* expects 8-d"):
        _load(setup, features={"encoder": "attnmap:tiny", "input_size": None})
    with pytest.raises(InputError, match=r"^features.encoder timm:vit_tiny_patch16_224: .*32×32 patch"):
        _load(setup, features={"encoder": "timm:vit_tiny_patch16_224"}, model={"checkpoint": "clam64.pt"})
    _, config = _load(setup, features={"encoder": "timm:test_vit", "input_size": None},
                      model={"checkpoint": "clam64.pt"}, heatmap=fine)
    assert config.heatmap.fine == {"top_k": 2}
    with pytest.raises(InputError, match=r"^features.checkpoint: the encoder file .*encoder.pt carries"):
        _load(setup, features={"checkpoint": "clam.pt"})


def test_slide_list_columns_and_encodings(setup: Path) -> None:
    """A space after a comma in the header ("slide_id, label") lost the labels without a word; a
    CSV saved in a legacy encoding was an internal error; extra columns are ignored."""
    (setup.parent / "spaced.csv").write_text("slide_id, label ,notes\nslide_0, 1,free text\n")
    entries, _ = _load(setup, slides={"csv": "spaced.csv"})
    assert [(entry.slide_id, entry.label) for entry in entries] == [("slide_0", "1")]
    (setup.parent / "legacy.csv").write_bytes("slide_id,label\nslide_0,bösartig\n".encode("cp1252"))
    legacy = r"legacy.csv is not a text CSV in UTF-8 \(line 2\): save it as \"CSV UTF-8\"$"
    with pytest.raises(InputError, match=legacy):
        _load(setup, slides={"csv": "legacy.csv"})
    # past the first 8 KB the position given was that in the decoder's buffer, not the file's
    rows = [f"slide_{i},gutartig" for i in range(600)] + ["slide_a,bösartig"]
    (setup.parent / "long.csv").write_bytes("\n".join(["slide_id,label", *rows]).encode("cp1252"))
    with pytest.raises(InputError, match=r"long.csv is not a text CSV in UTF-8 \(line 602\)"):
        _load(setup, slides={"csv": "long.csv"})
    (setup.parent / "semicolons.csv").write_text("\ufeffslide_id;label\r\nslide_0;1\r\n")  # Excel, de/fr
    entries, _ = _load(setup, slides={"csv": "semicolons.csv"})
    assert [(entry.slide_id, entry.label) for entry in entries] == [("slide_0", "1")]
    (setup.parent / "tabs.csv").write_text("slide_id\tlabel\nslide_0\t0\n")
    entries, _ = _load(setup, slides={"csv": "tabs.csv"})
    assert [(entry.slide_id, entry.label) for entry in entries] == [("slide_0", "0")]
    with pytest.raises(FileNotFoundError, match=r"slides.extension 'tif' is appended as it is: '.tif'\?"):
        _load(setup, slides={"csv": "tabs.csv", "extension": "tif"})
    (setup.parent / "no_rows.csv").write_text("slide_id,label\n")
    with pytest.raises(InputError, match=r"no_rows.csv lists no slides$"):
        _load(setup, slides={"csv": "no_rows.csv"})
    (setup.parent / "wrong_column.csv").write_text("slide,label\nslide_0,1\n")
    with pytest.raises(InputError, match=r"needs a 'slide_path' or 'slide_id' column, has label, slide$"):
        _load(setup, slides={"csv": "wrong_column.csv"})


def test_slide_paths_are_relative_to_the_csv_folder_or_data_dir(setup: Path) -> None:
    """Documented rule (docs/wsi_config_example.yaml): slide paths / ids in the CSV are relative to
    slides.data_dir, else to the CSV's own folder; data_dir and the CSV to the config's folder.
    Spaces and non-ASCII characters in names are kept; ids from file names must be distinct."""
    import shutil

    odd = setup.parent / "scans 2024" / "häm éosine"
    odd.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(setup.parent / "slides" / "slide_0.tif", odd / "biopsie n°1.tif")
    lists = setup.parent / "lists"
    lists.mkdir(exist_ok=True)
    absolute = setup.parent / "slides" / "slide_0.tif"
    (lists / "rel.csv").write_text(f"slide_path\n../scans 2024/häm éosine/biopsie n°1.tif\n{absolute}\n")
    entries, _ = _load(setup, slides={"csv": "lists/rel.csv", "data_dir": None, "extension": ""})
    assert [(entry.path, entry.slide_id) for entry in entries] == [
        (str(lists / "../scans 2024/häm éosine/biopsie n°1.tif"), "biopsie n°1"), (str(absolute), "slide_0")]
    (lists / "ids.csv").write_text("slide_id\nbiopsie n°1\n")
    entries, _ = _load(setup, slides={"csv": "lists/ids.csv", "data_dir": "scans 2024/häm éosine",
                                      "extension": ".tif"})
    assert entries[0].path == str(odd / "biopsie n°1.tif")
    (lists / "same_stem.csv").write_text(f"slide_path\n../scans 2024/häm éosine/biopsie n°1.tif\n{absolute}\n"
                                         f"{odd / 'biopsie n°1.tif'}\n")
    with pytest.raises(InputError, match=r"more than once \(ids are the file names without suffix\): "
                       r"biopsie n°1; give each slide its own slide_id$"):
        _load(setup, slides={"csv": "lists/same_stem.csv", "data_dir": None, "extension": ""})
    (lists / "folder.csv").write_text("slide_path\n../scans 2024\n")
    with pytest.raises(InputError, match=r"folder.csv: .*scans 2024 is a folder, not a slide file$"):
        _load(setup, slides={"csv": "lists/folder.csv", "data_dir": None, "extension": ""})


def test_encoder_weights_for_another_architecture_fail_at_load(setup: Path) -> None:
    """features.checkpoint that does not fit features.encoder failed each slide after its patches."""
    import timm
    import torch
    from synthetic_slide_files import write_clam_checkpoint

    write_clam_checkpoint(setup.parent / "clam64.pt", embed_dim=64)
    torch.save(timm.create_model("test_vit").state_dict(), setup.parent / "test_vit.pt")  # head: ignored
    torch.save(timm.create_model("test_resnet").state_dict(), setup.parent / "test_resnet.pt")
    features = {"encoder": "timm:test_vit", "input_size": None, "checkpoint": "test_vit.pt"}
    _, config = _load(setup, features=features, model={"checkpoint": "clam64.pt"})
    assert config.features.checkpoint == str(setup.parent / "test_vit.pt")
    with pytest.raises(InputError, match=r"^features.checkpoint: checkpoint .*test_resnet.pt does not fit "
                       r"VisionTransformer: none of its weights are there \(the file has bn1.bias, "):
        _load(setup, features={**features, "checkpoint": "test_resnet.pt"}, model={"checkpoint": "clam64.pt"})
    # the rule of attnmap.checkpoint, as for `attnmap explain`: a DINO teacher's backbone loads, and
    # blocks the encoder does not have are refused (they were dropped without a word)
    trunk = {k: v for k, v in timm.create_model("test_vit").state_dict().items() if not k.startswith("head.")}
    teacher = {f"backbone.{key}": value for key, value in trunk.items()}
    torch.save({"teacher": teacher, "epoch": 1}, setup.parent / "dino.pt")
    _load(setup, features={**features, "checkpoint": "dino.pt"}, model={"checkpoint": "clam64.pt"})
    # a UNI-like checkpoint (LayerScale): refused for the plain architecture, loaded with the
    # features.encoder_args that build it (its LayerScale was dropped without a word before)
    torch.save(timm.create_model("test_vit", init_values=1e-5).state_dict(), setup.parent / "scaled.pt")
    scaled = {**features, "checkpoint": "scaled.pt"}
    with pytest.raises(InputError, match=r"^features.checkpoint: .*scaled.pt does not fit VisionTransformer: "
                       r"unexpected: blocks.0.ls1.gamma, "):
        _load(setup, features=scaled, model={"checkpoint": "clam64.pt"})
    _, config = _load(setup, features={**scaled, "encoder_args": {"init_values": 1e-5}},
                      model={"checkpoint": "clam64.pt"})
    assert config.features.encoder_args == {"init_values": 1e-5}
    with pytest.raises(InputError, match=r"^features.encoder timm:test_vit: cannot build timm model "
                       r"'test_vit' with \{'no_such_argument': 1"):
        _load(setup, features={**features, "encoder_args": {"no_such_argument": 1}},
              model={"checkpoint": "clam64.pt"})
    with pytest.raises(InputError, match=r"^features.encoder: encoder arguments \(depth\) apply to timm "
                       r"architectures, not to 'resnet50_trunc'$"):
        _load(setup, features={"encoder": "resnet50_trunc", "input_size": None, "encoder_args": {"depth": 2}})
    # the same model saved the timm way (config.json with its model_args + weights), named as
    # timm:FOLDER relative to the configuration; its weights are checked at load too
    import json

    from safetensors.torch import save_file

    folder = setup.parent / "uni"
    folder.mkdir(exist_ok=True)
    hub = {"architecture": "test_vit", "num_classes": 0, "model_args": {"init_values": 1e-5}}
    (folder / "config.json").write_text(json.dumps(hub))
    save_file(timm.create_model("test_vit", init_values=1e-5, num_classes=0).state_dict(),
              str(folder / "model.safetensors"))
    _, config = _load(setup, features={"encoder": "timm:uni", "input_size": None},
                      model={"checkpoint": "clam64.pt"}, heatmap={"fine": {"top_k": 2}})
    assert config.features.encoder == f"timm:{folder}"
    (folder / "config.json").write_text(json.dumps({**hub, "model_args": {}}))
    with pytest.raises(InputError, match=r"^features.encoder: checkpoint .*uni/model.safetensors does not "
                       r"fit VisionTransformer: unexpected: blocks.0.ls1.gamma, "):
        _load(setup, features={"encoder": "timm:uni", "input_size": None}, model={"checkpoint": "clam64.pt"})
    torch.save(timm.create_model("test_vit", depth=8).state_dict(), setup.parent / "deeper.pt")
    with pytest.raises(InputError, match=r"^features.checkpoint: checkpoint .*deeper.pt does not fit "
                       r"VisionTransformer: unexpected: blocks.6.attn.proj.bias, "):
        _load(setup, features={**features, "checkpoint": "deeper.pt"}, model={"checkpoint": "clam64.pt"})


def test_patches_smaller_than_a_heatmap_pixel_fail_at_load(setup: Path) -> None:
    """Said by the renderer only after the slide's features and attention were computed."""
    with pytest.raises(InputError, match=r"^heatmap.vis_level: a 1-px patch at level 0 is smaller than one "
                       r"pixel at level 1 \(downsample 2\) of slide slide_0"):
        _load(setup, patching={"patch_size": 1})


def test_a_heatmap_too_large_to_draw_fails_at_load(setup: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by the renderer only after the slide's features and attention were computed."""
    from attnmap.wsi.heatmap import renderer

    monkeypatch.setattr(renderer, "MAX_CANVAS_PIXELS", 300_000)  # level 1 of the setup's slide: 512×384
    with pytest.raises(InputError, match=r"^heatmap.vis_level: the heatmap of slide slide_0 at level 0 would "
                       r"be 1024×768 px, more than the 300000 drawn in memory"):
        _load(setup, heatmap={"vis_level": 0})
    _load(setup, heatmap={"vis_level": 1})
    _load(setup, heatmap={"vis_level": 0, "roi": [[0, 0], [512, 512]]})  # a roi draws less


def test_a_key_or_section_given_twice_in_the_yaml_is_an_error(setup: Path) -> None:
    """PyYAML keeps the last of two equal keys: a second `patching:` section silently replaced the first."""
    text = setup.read_text()
    twice = setup.parent / "twice.yaml"
    twice.write_text(text + "patching:\n  level: 0\n")
    with pytest.raises(InputError, match=r"twice.yaml is not valid YAML: key 'patching' given twice .*line"):
        load_config(twice)
    twice.write_text(text.replace("  patch_size: 64\n", "  patch_size: 64\n  patch_size: 32\n"))
    with pytest.raises(InputError, match=r"key 'patch_size' given twice"):
        load_config(twice)
    twice.write_bytes(text.replace("normal", "bösartig").encode("latin-1"))
    with pytest.raises(InputError, match=r"twice.yaml is not UTF-8 text"):
        load_config(twice)


@pytest.mark.parametrize("name", ["timm:test_vit", "timm:test_convnext", "attnmap:tiny"])
def test_an_encoder_outline_is_the_encoder_without_its_weights(name: str) -> None:
    """The load-time checks see the class and feature size `load_encoder` gives, without weights in
    memory for a timm architecture (meta device)."""
    from attnmap.wsi.encoders import encoder_outline, load_encoder

    outline, real = encoder_outline(name), load_encoder(name)
    assert (type(outline.model), outline.feature_dim) == (type(real.model), real.feature_dim)
    assert outline.transform.size == real.transform.size
    if name.startswith("timm:"):
        assert all(parameter.is_meta for parameter in outline.model.parameters())


def test_naming_the_slides_of_a_run_opens_none_of_them(
    setup: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`wsi run` checks every slide against the configuration before its run; the summary after it
    only names the slides, without opening each one again."""
    from attnmap.wsi import slide

    config = load_config(setup)
    checked = read_slide_list(config)
    opened: list[object] = []
    real = slide.open_slide
    monkeypatch.setattr(slide, "open_slide", lambda path, *a, **k: opened.append(path) or real(path, *a, **k))
    assert read_slide_list(config, check_slides=False) == checked and opened == []
    read_slide_list(config)
    assert len(opened) == len(checked)  # the check does open them (the test sees the calls)


def test_a_level_one_slide_lacks_fails_that_slide_alone(tmp_path: Path) -> None:
    """segmentation.level 1 in a cohort where one slide was scanned without a pyramid: the whole
    run stopped before any work, naming that slide; now it fails alone (the project's rule)."""
    import json

    from synthetic_slide_files import write_changed_config, write_test_slide

    from attnmap.view.sources import find_slides
    from attnmap.wsi.pipeline.cohort import run_cohort
    from attnmap.wsi.pipeline.outputs import SlideOutputs

    setup = write_pipeline_setup(tmp_path / "setup", n_slides=2)
    write_test_slide(tmp_path / "setup" / "slides" / "slide_1.tif", seed=1, n_levels=1)
    small = {"heatmap": {"vis_level": 0}, "sampling": {"top_k": 0, "bottom_k": 0}}
    first = load_config(write_changed_config(setup, tmp_path / "out", segmentation={"level": 0}, **small))
    run_cohort(first, workers=1, progress=False)
    assert SlideOutputs(tmp_path / "out", "slide_1").prediction.is_file()  # level 0: both slides ran
    config = load_config(write_changed_config(setup, tmp_path / "out", **small))  # level 1
    assert [entry.slide_id for entry in read_slide_list(config)] == ["slide_0", "slide_1"]  # no stop
    report = run_cohort(config, workers=1, progress=False)
    assert [item.status for item in report.items] == ["done", "failed"]
    failed = report.items[1]
    assert failed.error_type == "InputError"
    assert failed.message == (
        "segmentation.level: level 1 does not exist in slide slide_1 (it has level 0 only)"
    )
    saved = json.loads((tmp_path / "out" / "run_report.json").read_text())
    assert [item["status"] for item in saved["items"]] == ["done", "failed"]
    assert (tmp_path / "out" / "predictions.csv").read_text().count("\n") == 2  # header and slide_0
    found = find_slides(tmp_path / "out")  # the viewer: slide_1's earlier heatmap is gone, not shown
    assert [slide.slide_id for slide in found.slides] == ["slide_0"]
    assert [(item.slide_id, item.reason.split(":")[0]) for item in found.unshown] == [
        ("slide_1", "failed in the run")
    ]
    (tmp_path / "setup" / "slides.csv").write_text("slide_id,label\nslide_1,0\n")  # no slide has it
    with pytest.raises(InputError, match=r"^segmentation.level: level 1 does not exist in slide slide_1 "):
        read_slide_list(config)


def test_tiff_level_without_tiff_is_an_error(setup: Path) -> None:
    """Like threshold without binarize: a TIFF level set with the TIFF off was accepted and ignored
    (even a level no slide has)."""
    with pytest.raises(InputError, match="tiff_level 1 acts only with tiff"):
        _load(setup, heatmap={"tiff_level": 1})
    assert _load(setup, heatmap={"tiff_level": 1, "tiff": True})[1].heatmap.tiff_level == 1


def test_a_downscale_below_one_pixel_fails_at_load(setup: Path) -> None:
    with pytest.raises(InputError, match=r"downscale 1000 shrinks the 512×384 px heatmap below one pixel"):
        _load(setup, heatmap={"downscale": 1000.0})


def test_an_overlap_whose_grid_step_is_under_a_pixel_fails_at_load(setup: Path) -> None:
    """64-px patches at overlap 0.99: the step (0.64 px) was rounded up to 1 px, another overlap
    than asked for, on a grid of minutes (found by bench/wsi_config_sweep.py)."""
    problem = r"heatmap.overlap 0.99 leaves a grid step of 0.64 px .* at most 0.984375"
    with pytest.raises(InputError, match=problem):
        _load(setup, heatmap={"overlap": 0.99})
    assert _load(setup, heatmap={"overlap": 0.984375})[1].heatmap.overlap == 0.984375


def test_a_dense_overlap_warns_what_it_costs(setup: Path) -> None:
    """A valid overlap of 0.99 on 256-px patches (a 2-px step) ran for hours without a word."""
    from attnmap.wsi.pipeline.config_checks import DenseOverlapWarning

    expected = r"overlap 0.95 is a 3-px step for 64-px patches: about 455 "  # (64 / 3)²
    with pytest.warns(DenseOverlapWarning, match=expected):
        _load(setup, heatmap={"overlap": 0.95})
    with warnings.catch_warnings():
        warnings.simplefilter("error", DenseOverlapWarning)
        for overlap in (0.0, 0.5, 0.75):  # at most 16 per block-grid patch
            _load(setup, heatmap={"overlap": overlap})


def test_a_slide_folder_or_pattern_as_slides_csv_says_what_slides_csv_takes(setup: Path) -> None:
    """``slides.csv: slides/`` (the folder of slides) was "not found", though the folder is there,
    and a pattern (``slides/*.tif``) the same; slides.csv takes a CSV file listing the slides."""
    with pytest.raises(InputError, match=r"^slides.csv .*slides is a folder, not a CSV file: list the slides "
                       r"in a CSV \(column slide_path or slide_id\)"):
        _load(setup, slides={"csv": "slides"})
    pattern = r"^slides.csv .*\*.tif names no file \(patterns are not expanded\): list the slides in a CSV"
    with pytest.raises(InputError, match=pattern):
        _load(setup, slides={"csv": "slides/*.tif"})
    with pytest.raises(FileNotFoundError, match="slides.csv not found"):
        _load(setup, slides={"csv": "missing.csv"})


def test_a_missing_slides_data_dir_is_named_not_every_slide(setup: Path) -> None:
    """A misspelt (or file) ``slides.data_dir`` was reported as "N slide(s) not found" with a path
    under it, as if the slides were missing; the key itself is named now."""
    with pytest.raises(InputError, match=r"^slides.data_dir .*slidez does not exist \(the folder the slide "):
        _load(setup, slides={"data_dir": "slidez"})
    with pytest.raises(InputError, match=r"^slides.data_dir .*slides.csv is a file, not a folder"):
        _load(setup, slides={"data_dir": "slides.csv"})


def test_slide_list_columns_are_read_whatever_their_case(setup: Path) -> None:
    """A spreadsheet's ``Slide_ID,Label`` header: the labels were dropped without a word (and
    ``Slide_ID`` alone was refused as no slide column); two columns one name apart by case are
    refused rather than one chosen."""
    (setup.parent / "cased.csv").write_text("Slide_ID,Label,Notes\nslide_0,tumour,x\n")
    entries, _ = _load(setup, slides={"csv": "cased.csv"})
    assert [(entry.slide_id, entry.label) for entry in entries] == [("slide_0", "tumour")]
    (setup.parent / "twice.csv").write_text("slide_id,Label,label\nslide_0,tumour,normal\n")
    with pytest.raises(InputError, match=r"twice.csv has the columns 'Label' and 'label'"):
        _load(setup, slides={"csv": "twice.csv"})


def test_an_unused_missing_data_dir_is_no_error(setup: Path) -> None:
    """A slide list of absolute paths does not use slides.data_dir: one left from a template that
    does not exist is no reason to refuse the run."""
    absolute = setup.parent / "slides" / "slide_0.tif"
    (setup.parent / "absolute.csv").write_text(f"slide_path\n{absolute}\n")
    entries, _ = _load(setup, slides={"csv": "absolute.csv", "data_dir": "slidez", "extension": ""})
    assert [entry.path for entry in entries] == [str(absolute)]
