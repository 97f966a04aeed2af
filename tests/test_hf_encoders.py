"""Hugging Face patch encoders in the slide pipeline (``features.encoder: hf:FOLDER``).

Phikon (ViTModel), Phikon-v2 / Hibou / Midnight (DINOv2) and PLIP (CLIP) are published in the Hugging
Face layout only. The features must be the read-out their authors use, computed exactly as the model
computes it, with the folder's normalisation; a folder whose weights change is a new encoder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from synthetic_slide_files import write_clam_checkpoint, write_pipeline_setup

from attnmap.errors import InputError

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("single_thread")

WIDTH = 32
PHIKON_MEAN, PHIKON_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _save(model: torch.nn.Module, folder: Path, size: int = 32) -> Path:
    model.save_pretrained(folder)
    processor = {"image_mean": PHIKON_MEAN, "image_std": PHIKON_STD, "size": {"height": size, "width": size},
                 "do_resize": True, "do_normalize": True, "resample": 3}
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return folder


def _sizes(**extra: object) -> dict:
    return dict(hidden_size=WIDTH, intermediate_size=2 * WIDTH, num_hidden_layers=2, num_attention_heads=2,
                image_size=32, patch_size=8, **extra)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf_encoders")
    torch.manual_seed(0)
    vit = transformers.ViTModel(transformers.ViTConfig(**_sizes()), add_pooling_layer=False).eval()
    dinov2 = transformers.Dinov2Model(transformers.Dinov2Config(**_sizes(layerscale_value=0.5))).eval()
    clip = transformers.CLIPVisionModelWithProjection(
        transformers.CLIPVisionConfig(**_sizes(projection_dim=16))
    ).eval()
    swiglu = transformers.Dinov2Model(  # DINOv2 ViT-g's MLP (Midnight)
        transformers.Dinov2Config(**_sizes(layerscale_value=0.5, use_swiglu_ffn=True))
    ).eval()
    return {"vit": _save(vit, root / "phikon_like"), "dinov2": _save(dinov2, root / "phikon_v2_like"),
            "clip": _save(clip, root / "plip_like"), "dinov2_swiglu": _save(swiglu, root / "midnight_like")}


def _patches(size: int = 32) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(3, size, size, 3), dtype=np.uint8)


def _reference_input(patches: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(patches).permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor(PHIKON_MEAN).view(1, 3, 1, 1), torch.tensor(PHIKON_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@pytest.mark.parametrize(
    ("kind", "readout", "expected"),
    [
        ("vit", {}, lambda out: out.last_hidden_state[:, 0]),  # Phikon's recipe
        ("dinov2", {}, lambda out: out.last_hidden_state[:, 0]),  # Phikon-v2's
        ("dinov2", {"readout": "cls_and_patch_mean"},  # Midnight's
         lambda out: torch.cat([out.last_hidden_state[:, 0], out.last_hidden_state[:, 1:].mean(1)], 1)),
        ("dinov2", {"readout": "patch_mean"}, lambda out: out.last_hidden_state[:, 1:].mean(1)),
        ("clip", {"readout": "embeds"}, lambda out: out.image_embeds),  # PLIP's image features
    ],
)
def test_features_are_the_models_read_out_with_the_folders_normalisation(
    folders: dict[str, Path], kind: str, readout: dict, expected
) -> None:
    from attnmap.wsi.encoders import load_encoder

    encoder = load_encoder(f"hf:{folders[kind]}", model_args=readout)
    patches = _patches()
    batch = torch.stack([encoder.transform(patch) for patch in patches])
    torch.testing.assert_close(batch, _reference_input(patches), rtol=0, atol=1e-6)
    reference = type(encoder.model.model).from_pretrained(folders[kind], local_files_only=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(encoder.model(batch), expected(reference(pixel_values=batch)))
    assert encoder.feature_dim == expected(reference(pixel_values=batch)).shape[1]


def test_bad_read_outs_and_folders_are_one_line_errors(folders: dict[str, Path], tmp_path: Path) -> None:
    from attnmap.wsi.encoders import known_encoder_name, load_encoder

    with pytest.raises(InputError, match="readout must be one of cls, pooler"):
        load_encoder(f"hf:{folders['vit']}", model_args={"readout": "mean"})
    with pytest.raises(InputError, match=r"encoder arguments \(depth\) apply to timm .* only readout"):
        load_encoder(f"hf:{folders['vit']}", model_args={"depth": 2})
    with pytest.raises(InputError, match="readout 'embeds' needs a model with a projection"):
        load_encoder(f"hf:{folders['dinov2']}", model_args={"readout": "embeds"})
    with pytest.raises(InputError, match="readout 'pooler': ViTModel gives none"):
        load_encoder(f"hf:{folders['vit']}", model_args={"readout": "pooler"})
    with pytest.raises(InputError, match="not a local Hugging Face model folder"):
        load_encoder(f"hf:{tmp_path}")
    assert known_encoder_name(f"hf:{folders['vit']}") and not known_encoder_name(f"hf:{tmp_path}")


def _run_config(root: Path, folder: Path, **features: object) -> Path:
    path = write_pipeline_setup(root, n_slides=1)
    write_clam_checkpoint(root / "clam32.pt", embed_dim=WIDTH)
    data = yaml.safe_load(path.read_text())
    data["features"] = {"encoder": f"hf:{folder}", "batch_size": 16, **features}
    data["model"]["checkpoint"] = "clam32.pt"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_slide_run_with_an_hf_encoder_and_its_features_follow_the_folders_weights(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    """Features equal the model's class token on the slide's patches; weights replaced in the folder
    (same names) change the fingerprint, so the features are computed again, not reused."""
    import h5py

    from attnmap.wsi.pipeline import run_slide
    from attnmap.wsi.pipeline.config import load_config
    from attnmap.wsi.pipeline.fingerprint import encoder_identity

    folder = tmp_path / "phikon_v2_like"
    shutil.copytree(folders["dinov2"], folder)
    config = load_config(_run_config(tmp_path, folder))
    run_slide(tmp_path / "slides" / "slide_0.tif", config)
    features_file = next(Path(config.run.output_dir).rglob("slide_0.h5"))
    with h5py.File(features_file) as handle:
        first = handle["features"][:]
    assert first.shape[1] == WIDTH and np.isfinite(first).all()
    before = encoder_identity(config.features)

    torch.manual_seed(5)
    other = transformers.Dinov2Model(transformers.Dinov2Config(**_sizes(layerscale_value=0.5))).eval()
    other.save_pretrained(folder)  # new weights under the same file names
    config = load_config(_run_config(tmp_path, folder))
    assert encoder_identity(config.features) != before
    run_slide(tmp_path / "slides" / "slide_0.tif", config)
    with h5py.File(features_file) as handle:
        second = handle["features"][:]
    assert second.shape == first.shape and not np.allclose(second, first)


@pytest.mark.parametrize(
    ("kind", "readout"),
    [(kind, readout) for kind in ("vit", "dinov2", "dinov2_swiglu")
     for readout in ("cls", "cls_and_patch_mean")]
    + [("dinov2", "pooler"), ("dinov2_swiglu", "pooler")]  # DINOv2's pooler: its normed class token
    # CLIP (PLIP): the class token un-normed, after post_layernorm (pooler), then projected (embeds)
    + [("clip", readout) for readout in ("cls", "pooler", "embeds", "patch_mean")],
)
def test_fine_maps_run_on_the_encoders_timm_twin_and_conserve(
    folders: dict[str, Path], kind: str, readout: str
) -> None:
    """The fine maps' conservative relevance runs on a timm VisionTransformer with the HF weights; at
    another input size than the saved one (positions resampled by HF itself), the twin computes the
    encoder's features and the pixels plus the bias share sum to the score, exactly in float64."""
    from attnmap.wsi.encoders import load_encoder
    from attnmap.wsi.heatmap.encoder_relevance import check_encoder_forward, encoder_relevance

    encoder = load_encoder(f"hf:{folders[kind]}", model_args={"readout": readout}, input_size=48)
    model = encoder.model.double()
    images = torch.randn(2, 3, 48, 48, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    check_encoder_forward(model, images, atol=1e-12)
    generator = torch.Generator().manual_seed(4)
    direction = torch.randn(encoder.feature_dim, dtype=torch.float64, generator=generator)
    result = encoder_relevance(model, images, direction)
    with torch.no_grad():
        torch.testing.assert_close(result.score, model(images) @ direction, rtol=1e-12, atol=1e-12)
    total = result.pixels.sum(dim=(1, 2)) + result.bias_share
    torch.testing.assert_close(total, result.score, rtol=0, atol=1e-10)


def test_fine_maps_in_a_slide_run_with_an_hf_encoder(folders: dict[str, Path], tmp_path: Path) -> None:
    from attnmap.wsi.heatmap.fine_store import FineMapFile
    from attnmap.wsi.pipeline import run_slide
    from attnmap.wsi.pipeline.config import load_config

    path = _run_config(tmp_path, folders["dinov2"])
    data = yaml.safe_load(path.read_text())
    data["heatmap"]["fine"] = {"method": "lrp", "top_k": 3}
    path.write_text(yaml.safe_dump(data))
    config = load_config(path)
    run_slide(tmp_path / "slides" / "slide_0.tif", config)
    with FineMapFile(next(Path(config.run.output_dir).rglob("slide_0_fine_maps.h5"))) as store:
        assert len(store) == 3 and store.map_shape == (32, 32)
        totals = store.read(np.arange(3)).sum(axis=(1, 2))
        assert np.allclose(totals, store.scores[store.fine_index], atol=1e-4)


def test_fine_maps_of_an_encoder_without_a_timm_twin_are_refused_before_any_slide(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    from attnmap.wsi.pipeline.config import load_config

    torch.manual_seed(0)
    siglip = transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**_sizes())).eval()
    write_clam_checkpoint(tmp_path / "clam32.pt", embed_dim=WIDTH)
    path = _run_config(tmp_path, _save(siglip, tmp_path / "siglip"), encoder_args={"readout": "pooler"})
    data = yaml.safe_load(path.read_text())
    data["model"]["checkpoint"] = "clam32.pt"
    data["heatmap"]["fine"] = {"top_k": 2}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(InputError, match="^heatmap.fine: fine maps of a Hugging Face siglip_vision_model"):
        load_config(path)


def test_wsi_features_with_an_hf_encoder_and_its_read_out(folders: dict[str, Path], tmp_path: Path) -> None:
    import h5py

    from attnmap.cli.main import main

    write_pipeline_setup(tmp_path, n_slides=1)
    out = tmp_path / "out"
    main(["--quiet", "wsi", "features", str(tmp_path / "slides" / "slide_0.tif"), "--encoder",
          f"hf:{folders['dinov2']}", "--encoder-arg", "readout=cls_and_patch_mean", "--patch-size", "64",
          "--batch-size", "16", "--device", "cpu", "--seg-level", "1", "--a-t", "0.05", "--a-h", "0.01",
          "-o", str(out)])
    with h5py.File(out / "features" / "h5_files" / "slide_0.h5") as handle:
        assert handle["features"].shape[1] == 2 * WIDTH and handle["features"].shape[0] > 0


@pytest.mark.parametrize(
    "processor",
    [
        {"rescale_factor": 1 / 127.5, "image_mean": [1.0] * 3, "image_std": [1.0] * 3},  # to -1..1
        {"do_normalize": False},
        {"image_mean": 0.5, "image_std": 0.25},  # one number for every channel
        {"do_rescale": False, "image_mean": [127.5, 120.0, 110.0], "image_std": [60.0, 58.0, 57.0]},
        {"image_processor_type": "BitImageProcessor", "size": {"shortest_edge": 32},  # Phikon-v2's kind
         "do_center_crop": True, "crop_size": {"height": 32, "width": 32}, "image_mean": PHIKON_MEAN,
         "image_std": PHIKON_STD},
    ],
)
def test_the_encoder_input_is_what_the_folders_image_processor_gives(
    folders: dict[str, Path], tmp_path: Path, processor: dict
) -> None:
    """Every number the processor applies (rescale factor, whether it rescales or normalises, a mean
    given once) reaches both the slide encoder's transform and explain's preprocessing."""
    from attnmap.vit.models import load_model
    from attnmap.vit.preprocess import preprocess
    from attnmap.wsi.encoders import load_encoder

    folder = tmp_path / "model"
    shutil.copytree(folders["vit"], folder)
    saved = {"image_processor_type": "ViTImageProcessor", "do_resize": True,
             "size": {"height": 32, "width": 32}, "resample": 2, **processor}
    (folder / "preprocessor_config.json").write_text(json.dumps(saved))
    patches = _patches()
    image_processor = transformers.AutoImageProcessor.from_pretrained(folder)
    expected = image_processor(images=list(patches), return_tensors="pt")
    encoder = load_encoder(f"hf:{folder}")
    ours = torch.stack([encoder.transform(patch) for patch in patches])
    torch.testing.assert_close(ours, expected["pixel_values"], rtol=0, atol=1e-5)
    explained, _ = preprocess(load_model(f"hf:{folder}"), list(patches))
    torch.testing.assert_close(explained, expected["pixel_values"], rtol=0, atol=1e-5)


def test_a_full_clip_folder_gives_its_vision_towers_pooled_and_projected_features(tmp_path: Path) -> None:
    """PLIP ships a whole CLIPModel: ``embeds`` is its image features, ``pooler`` the pooled output of
    its vision transformer (the tower with a projection returns no pooler_output of its own)."""
    from attnmap.wsi.encoders import load_encoder

    text = dict(hidden_size=WIDTH, intermediate_size=2 * WIDTH, num_hidden_layers=1, num_attention_heads=2,
                vocab_size=64, max_position_embeddings=8)
    torch.manual_seed(2)
    config = transformers.CLIPConfig(text_config=text, vision_config=_sizes(), projection_dim=16)
    _save(transformers.CLIPModel(config).eval(), tmp_path / "plip_like")
    full = transformers.CLIPModel.from_pretrained(tmp_path / "plip_like", local_files_only=True).eval()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        pooled = full.vision_model(pixel_values=images).pooler_output
        expected = {"pooler": pooled, "embeds": full.visual_projection(pooled)}  # get_image_features
        for readout, features in expected.items():
            encoder = load_encoder(f"hf:{tmp_path / 'plip_like'}", model_args={"readout": readout})
            torch.testing.assert_close(encoder.model(images), features)
            assert encoder.feature_dim == features.shape[1]


def test_a_classifier_folder_sharded_or_bin_weights_give_the_trunks_features(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    """A ViTForImageClassification folder encodes with its trunk (no pooler: refused as a read-out);
    weights saved in shards or as pytorch_model.bin load as they are."""
    from attnmap.wsi.encoders import load_encoder

    torch.manual_seed(3)
    classifier = transformers.ViTForImageClassification(transformers.ViTConfig(**_sizes(num_labels=3))).eval()
    _save(classifier, tmp_path / "classifier")
    trunk = transformers.ViTModel.from_pretrained(folders["vit"], add_pooling_layer=False).eval()
    trunk.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "config.json").write_text((folders["vit"] / "config.json").read_text())
    torch.save(trunk.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    assert len(list((tmp_path / "sharded").glob("*.safetensors"))) > 1
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        encoder = load_encoder(f"hf:{tmp_path / 'classifier'}")
        expected = classifier.vit(pixel_values=images).last_hidden_state[:, 0]
        torch.testing.assert_close(encoder.model(images), expected)
        for name in ("sharded", "bin"):
            encoder = load_encoder(f"hf:{tmp_path / name}")
            expected = trunk(pixel_values=images).last_hidden_state[:, 0]
            torch.testing.assert_close(encoder.model(images), expected)
    with pytest.raises(InputError, match="^readout 'pooler': ViTModel gives none .*; use readout cls$"):
        load_encoder(f"hf:{tmp_path / 'classifier'}", model_args={"readout": "pooler"})


def test_input_sizes_off_the_patch_grid_and_unreadable_processor_entries_are_one_line_errors(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    from attnmap.wsi.encoders import load_encoder

    with pytest.raises(InputError, match="input_size 36 is not a multiple of .*'s 8-px patches"):
        load_encoder(f"hf:{folders['vit']}", input_size=36)  # HF's ViT would drop 4 px of every side
    folder = tmp_path / "model"
    shutil.copytree(folders["vit"], folder)
    for saved, message in (('{"size": "large"}', "unreadable preprocessing"),
                           ('{"image_mean": [0.5, 0.5]}', "image_mean must be 3 numbers"),
                           ('{"image_std": [0.5, 0, 0.5]}', "image_std must be positive"),
                           ("[1, 2]", "must hold a JSON object"), ("{size", "cannot read")):
        (folder / "preprocessor_config.json").write_text(saved)
        with pytest.raises(InputError, match=message) as error:
            load_encoder(f"hf:{folder}")
        assert "\n" not in str(error.value)


def test_saved_weights_the_folders_class_has_no_place_for_are_refused(tmp_path: Path) -> None:
    """Hibou-style: DINOv2 with register tokens whose config names the plain Dinov2Model (its own code
    in auto_map, never run here): transformers would drop the registers and give another model's
    features; a full CLIP folder's text tower is left out as expected."""
    from attnmap.wsi.encoders import load_encoder

    folder = _save(transformers.Dinov2WithRegistersModel(
        transformers.Dinov2WithRegistersConfig(**_sizes(num_register_tokens=4))
    ), tmp_path / "hibou_like")
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="dinov2", architectures=["Dinov2Model"])
    config["auto_map"] = {"AutoModel": "custom.Dinov2Model"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match=r"1 saved weights have no place in Dinov2Model .*register_tokens\)"):
        load_encoder(f"hf:{folder}")
    config["architectures"] = ["Dinov2ModelWithRegisters"]  # the custom class itself: not transformers'
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match=r"names Dinov2ModelWithRegisters, a class transformers .* not have"):
        load_encoder(f"hf:{folder}")


@pytest.mark.parametrize("resample", [0, 1, 3, 4, 5])  # PIL's nearest, lanczos, bicubic, box, hamming
def test_patches_of_another_size_are_resized_with_the_processors_filter(
    folders: dict[str, Path], tmp_path: Path, resample: int
) -> None:
    """48-px patches resized to the model's 32: the very numbers of the folder's PIL image processor
    (lanczos, nearest, box and hamming fell back to bilinear)."""


    saved = {"image_processor_type": "ViTImageProcessor", "do_resize": True,
             "size": {"height": 32, "width": 32}, "resample": resample, "image_mean": PHIKON_MEAN,
             "image_std": PHIKON_STD}
    _assert_transform_is_the_processors(folders["vit"], tmp_path / "model", saved)


def _assert_transform_is_the_processors(source: Path, folder: Path, saved: dict) -> None:
    """The encoder's patch transform equals the image processor that ``saved`` configures (PIL)."""
    from attnmap.wsi.encoders import load_encoder

    shutil.copytree(source, folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(saved))
    patches = np.random.default_rng(1).integers(0, 256, size=(2, 48, 48, 3), dtype=np.uint8)
    image_processor = transformers.AutoImageProcessor.from_pretrained(folder, backend="pil")
    expected = image_processor(images=list(patches), return_tensors="pt")["pixel_values"]
    encoder = load_encoder(f"hf:{folder}")
    ours = torch.stack([encoder.transform(patch) for patch in patches])
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)


def test_a_model_without_a_class_token_refuses_the_class_token_read_outs(tmp_path: Path) -> None:
    """SigLIP's first token is a patch's: ``cls`` would silently be one patch's token; its pooled
    output (the attention-pool head) and the patch mean are what it offers."""
    from attnmap.wsi.encoders import load_encoder

    text = dict(hidden_size=WIDTH, intermediate_size=2 * WIDTH, num_hidden_layers=1, num_attention_heads=2,
                vocab_size=64, max_position_embeddings=8, eos_token_id=1)
    torch.manual_seed(4)
    config = transformers.SiglipConfig(text_config=text, vision_config=_sizes())
    siglip = transformers.SiglipModel(config).eval()
    siglip.save_pretrained(tmp_path / "siglip")
    for readout in ("cls", "cls_and_patch_mean"):
        with pytest.raises(InputError, match=f"^readout '{readout}': SiglipVisionModel has no class token"):
            load_encoder(f"hf:{tmp_path / 'siglip'}", model_args={"readout": readout})
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    encoder = load_encoder(f"hf:{tmp_path / 'siglip'}", model_args={"readout": "pooler"})
    with torch.no_grad():
        expected = siglip.vision_model(pixel_values=images).pooler_output
        torch.testing.assert_close(encoder.model(images), expected)


def test_a_config_without_architectures_loads_as_the_families_base_model(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    """A config.json written by hand or from AutoConfig names no class: AutoModel's for its
    model_type (it was refused as an unsupported model type although ViT is one)."""
    from attnmap.wsi.encoders import load_encoder

    folder = tmp_path / "model"
    shutil.copytree(folders["dinov2"], folder)
    config = json.loads((folder / "config.json").read_text())
    del config["architectures"]
    (folder / "config.json").write_text(json.dumps(config))
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    reference = transformers.Dinov2Model.from_pretrained(folders["dinov2"], local_files_only=True).eval()
    with torch.no_grad():
        expected = reference(pixel_values=images).last_hidden_state[:, 0]
        torch.testing.assert_close(load_encoder(f"hf:{folder}").model(images), expected)


def test_a_folder_saved_in_half_precision_computes_in_float32(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    """Hub folders are often saved in bfloat16 and transformers 5 keeps the saved dtype: the encoder
    computed in bfloat16 whatever features.precision said (and its fine maps with it)."""
    from attnmap.wsi.encoders import load_encoder

    saved = transformers.Dinov2Model.from_pretrained(folders["dinov2"], local_files_only=True).eval()
    _save(saved.to(torch.bfloat16), tmp_path / "bf16")
    reference = saved.float()  # the bfloat16 weights, exactly, in float32
    encoder = load_encoder(f"hf:{tmp_path / 'bf16'}")
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        features = encoder.model(images)
        assert features.dtype == torch.float32
        torch.testing.assert_close(features, reference(pixel_values=images).last_hidden_state[:, 0])
        assert encoder.model.fine_twin()(images).dtype == torch.float32


def test_entries_a_processor_json_leaves_out_take_its_classes_defaults(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    """A BitImageProcessor JSON naming only its sizes resizes bicubic with OpenAI's mean and std, as
    that processor does (they were read as bilinear and 0.5)."""


    saved = {"image_processor_type": "BitImageProcessor", "size": {"shortest_edge": 32},
             "crop_size": {"height": 32, "width": 32}}
    _assert_transform_is_the_processors(folders["dinov2"], tmp_path / "model", saved)
