"""Architecture arguments of timm encoders (`features.encoder_args`, ``--model-arg``, ``--encoder-arg``).

The foundation models pathologists run are timm architectures with non-default arguments (UNI's
LayerScale, Virchow2's packed SwiGLU with SiLU and registers). The slide pipeline could only build a
timm name with its defaults, so such weights could not be used; layer classes are named by string.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml
from synthetic_slide_files import write_clam_checkpoint, write_pipeline_setup

from attnmap.errors import InputError
from attnmap.vit.models import load_model
from attnmap.vit.timm_build import timm_arguments

pytestmark = pytest.mark.usefixtures("single_thread")

UNI_LIKE = {"init_values": 1.0e-5}  # test_vit (64-d, 160 px) with LayerScale, as UNI is a ViT-L with it
VIRCHOW2_LIKE = {"mlp_layer": "SwiGLUPacked", "act_layer": "silu", "reg_tokens": 4, "init_values": 1.0e-5}


def test_layer_classes_by_name_build_the_same_model_as_the_classes() -> None:
    from timm.layers import SwiGLUPacked

    torch.manual_seed(0)
    direct = timm.create_model(
        "test_vit", num_classes=0, mlp_layer=SwiGLUPacked, act_layer=torch.nn.SiLU, reg_tokens=4,
        init_values=1e-5,
    ).eval()
    by_name = load_model("timm:test_vit", num_classes=0, **VIRCHOW2_LIKE)
    by_name.load_state_dict(direct.state_dict(), strict=True)  # the same layers, shapes and names
    mlp = by_name.blocks[0].mlp
    assert type(mlp) is type(direct.blocks[0].mlp) and isinstance(mlp.act, torch.nn.SiLU)
    x = torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(by_name(x), direct(x), rtol=0, atol=0)
    assert timm_arguments({"norm_layer": "rmsnorm"})["norm_layer"] is timm.layers.RmsNorm


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"mlp_layer": "SwiGLUPackd"}, "mlp_layer 'SwiGLUPackd' is not one of timm's MLP blocks: Mlp, "),
        ({"mlp_layer": "SwiGLUPacked"}, "mlp_layer SwiGLUPacked needs its act_layer: the activation"),
        ({"act_layer": "swish2"}, "act_layer 'swish2' is not a name timm knows"),
        ({"norm_layer": "batchnorm9"}, "norm_layer 'batchnorm9' is not a name timm knows"),
        ({"depth": "two"}, "cannot build timm model 'test_vit'"),
    ],
)
def test_bad_arguments_are_one_line_errors(arguments: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        load_model("timm:test_vit", **arguments)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("encoder_args")
    path = write_pipeline_setup(root, n_slides=1)
    write_clam_checkpoint(root / "clam64.pt", embed_dim=64)
    torch.manual_seed(3)
    uni_like = timm.create_model("test_vit", num_classes=0, **UNI_LIKE)
    torch.save(uni_like.state_dict(), root / "uni_like.pt")
    return path


def _config(setup: Path, **features: object) -> Path:
    data = yaml.safe_load(setup.read_text())
    data["features"] = {"encoder": "timm:test_vit", "checkpoint": "uni_like.pt", "batch_size": 8, **features}
    data["model"]["checkpoint"] = "clam64.pt"
    path = setup.parent / f"config_{len(features)}_{abs(hash(repr(features)))}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_uni_like_checkpoint_loads_with_its_arguments_and_gives_its_features(setup: Path) -> None:
    from attnmap.wsi.pipeline.config import load_config

    config = load_config(_config(setup, encoder_args=UNI_LIKE))
    encoder, _ = config.features.load_encoder("cpu")
    reference = timm.create_model("test_vit", num_classes=0, **UNI_LIKE).eval()
    reference.load_state_dict(torch.load(setup.parent / "uni_like.pt"))
    patches = torch.randn(3, 3, 160, 160, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(encoder.model(patches), reference(patches), rtol=0, atol=0)
    assert encoder.transform.size == 160
    imagenet = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}  # UNI's normalisation
    config = load_config(_config(setup, encoder_args={**UNI_LIKE, "pretrained_cfg_overlay": imagenet}))
    transform = config.features.load_encoder("cpu")[0].transform
    assert (transform.mean, transform.std) == (tuple(imagenet["mean"]), tuple(imagenet["std"]))


def test_without_its_arguments_the_checkpoint_is_refused_at_load(setup: Path) -> None:
    """Its LayerScale weights have nowhere to go in a model built without init_values."""
    from attnmap.wsi.pipeline.config import load_config

    with pytest.raises(InputError, match=r"^features.checkpoint: .*ls1.gamma"):
        load_config(_config(setup))
    with pytest.raises(InputError, match=r"features.encoder.*mlp_layer 'Nope'"):
        load_config(_config(setup, encoder_args={"mlp_layer": "Nope"}))
    with pytest.raises(InputError, match=r"encoder arguments \(depth\) apply to timm architectures"):
        load_config(_config(setup, encoder="resnet50_trunc", checkpoint=None, encoder_args={"depth": 2}))


def test_encoder_arguments_are_part_of_the_features_fingerprint(setup: Path) -> None:
    """Changing them changes the encoder: features computed with the old ones must not be reused."""
    from attnmap.wsi.pipeline.config import load_config
    from attnmap.wsi.pipeline.fingerprint import encoder_identity

    plain = encoder_identity(load_config(_config(setup, encoder_args={}, checkpoint=None)).features)
    assert "encoder_args" not in plain  # fingerprints of earlier runs unchanged
    first = encoder_identity(load_config(_config(setup, encoder_args=UNI_LIKE)).features)
    second = encoder_identity(load_config(_config(setup, encoder_args={"init_values": 1.0e-4})).features)
    assert first["encoder_args"] == {"init_values": 1e-05} and first != second


def test_wsi_features_takes_encoder_arguments(setup: Path, tmp_path: Path) -> None:
    import h5py

    from attnmap.cli.main import main

    slide = setup.parent / "slides" / "slide_0.tif"
    out = tmp_path / "out"
    common = ["wsi", "features", str(slide), "--encoder", "timm:test_vit", "--checkpoint",
              str(setup.parent / "uni_like.pt"), "--patch-size", "256", "--batch-size", "8",
              "--device", "cpu", "--seg-level", "1", "--a-t", "0.05", "--a-h", "0.01"]
    main(["--quiet", *common, "-o", str(out), "--encoder-arg", "init_values=1e-5"])
    with h5py.File(out / "features" / "h5_files" / "slide_0.h5") as handle:
        assert handle["features"].shape[1] == 64 and handle["features"].shape[0] > 0
    with pytest.raises(SystemExit) as done:  # the same checkpoint without its arguments
        main(["--quiet", *common, "-o", str(tmp_path / "plain")])
    assert done.value.code == 2


def test_fine_maps_accept_a_virchow2_like_encoder(setup: Path) -> None:
    """Packed SwiGLU with SiLU and registers: the fine maps' conservative rules cover it (refused before)."""
    from attnmap.wsi.pipeline.config import load_config

    path = _config(setup, encoder_args={**VIRCHOW2_LIKE, "global_pool": "token"}, checkpoint=None)
    data = yaml.safe_load(path.read_text())
    data["heatmap"]["fine"] = {"top_k": 2}
    path.write_text(yaml.safe_dump(data))
    assert load_config(path).heatmap.fine == {"top_k": 2}


VIRCHOW2_EMBEDDING = {**VIRCHOW2_LIKE, "global_pool": "class_and_patch_mean"}


def test_class_and_patch_mean_is_virchows_embedding_and_loads_the_plain_architectures_weights() -> None:
    """Virchow / Virchow2 publish [class token, mean of the patch tokens] (registers left out)."""
    torch.manual_seed(4)
    plain = load_model("timm:test_vit", num_classes=0, **{**VIRCHOW2_LIKE, "global_pool": ""})
    embedding = load_model("timm:test_vit", **VIRCHOW2_EMBEDDING)  # headless without being told
    embedding.load_state_dict(plain.state_dict(), strict=True)  # the same keys: checkpoints load as they are
    x = torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        tokens = plain(x)  # (B, 1 + 4 + P, D)
        expected = torch.cat([tokens[:, 0], tokens[:, 5:].mean(dim=1)], dim=-1)
        torch.testing.assert_close(embedding(x), expected, rtol=0, atol=0)
    assert embedding(x).shape == (2, 128)
    with pytest.raises(InputError, match="gives an embedding: build it with num_classes=0"):
        load_model("timm:test_vit", num_classes=3, global_pool="class_and_patch_mean")
    with pytest.raises(InputError, match="needs a timm VisionTransformer with a class token; .* is a Eva"):
        load_model("timm:eva02_tiny_patch14_224", global_pool="class_and_patch_mean", depth=1)


def test_a_virchow2_embedding_encoder_in_a_slide_configuration(setup: Path) -> None:
    """Features of 2 × width for a MIL model trained on them; fine maps accepted for it."""
    from attnmap.wsi.pipeline.config import load_config

    write_clam_checkpoint(setup.parent / "clam128.pt", embed_dim=128)
    path = _config(setup, encoder_args=VIRCHOW2_EMBEDDING, checkpoint=None)
    data = yaml.safe_load(path.read_text())
    data["model"]["checkpoint"] = "clam128.pt"
    data["heatmap"]["fine"] = {"top_k": 2}
    path.write_text(yaml.safe_dump(data))
    config = load_config(path)
    assert config.features.load_encoder("cpu")[0].feature_dim == 128
    data["model"]["checkpoint"] = "clam64.pt"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(InputError, match="gives 128-d features but model.checkpoint .* expects 64-d"):
        load_config(path)


def test_a_slide_run_end_to_end_with_a_virchow2_embedding_encoder_and_fine_maps(tmp_path: Path) -> None:
    """Features [class token, patch mean] (2 × width) → CLAM → fine maps that sum to the patch scores."""
    from attnmap.wsi.heatmap.fine_store import FineMapFile
    from attnmap.wsi.pipeline import run_slide
    from attnmap.wsi.pipeline.config import load_config

    path = write_pipeline_setup(tmp_path, n_slides=1)
    write_clam_checkpoint(tmp_path / "clam64.pt", embed_dim=64)
    data = yaml.safe_load(path.read_text())
    tiny = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
    data["features"] = {"encoder": "timm:vit_huge_patch14_224", "batch_size": 16,
                        "encoder_args": {**VIRCHOW2_EMBEDDING, **tiny}}
    data["model"]["checkpoint"] = "clam64.pt"
    data["heatmap"]["fine"] = {"method": "lrp", "top_k": 3}
    path.write_text(yaml.safe_dump(data))
    config = load_config(path)
    run_slide(tmp_path / "slides" / "slide_0.tif", config)
    fine = next(Path(config.run.output_dir).rglob("slide_0_fine_maps.h5"))
    with FineMapFile(fine) as store:
        assert len(store) == 3 and store.map_shape == (32, 32)  # the encoder's input size
        totals = store.read(np.arange(3)).sum(axis=(1, 2))
        assert np.allclose(totals, store.scores[store.fine_index], atol=1e-4)


def test_a_timm_folder_brings_its_normalisation_and_class_paths_resolve(tmp_path: Path) -> None:
    """A Hub folder's config.json carries the model's own mean / std (UNI: ImageNet's), which the
    architecture's defaults (0.5) would silently replace; saved configs write layer classes as paths."""
    import json

    from attnmap.wsi.encoders import load_encoder

    folder = tmp_path / "uni"
    folder.mkdir()
    imagenet = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    config = {"architecture": "test_vit", "model_args": {**UNI_LIKE, "num_classes": 0},
              "pretrained_cfg": {**imagenet, "interpolation": "bicubic", "hf_hub_id": "somewhere/uni"}}
    (folder / "config.json").write_text(json.dumps(config))
    weights = timm.create_model("test_vit", num_classes=0, **UNI_LIKE).state_dict()
    torch.save(weights, folder / "pytorch_model.bin")
    transform = load_encoder(f"timm:{folder}").transform
    assert (transform.mean, transform.std) == (tuple(imagenet["mean"]), tuple(imagenet["std"]))
    paths = timm_arguments({"mlp_layer": "timm.layers.SwiGLUPacked", "act_layer": "torch.nn.SiLU"})
    assert paths == timm_arguments({"mlp_layer": "SwiGLUPacked", "act_layer": "silu"})


@pytest.fixture(scope="module")
def virchow2_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """A Virchow2-shaped ViT (packed SwiGLU with SiLU, 4 registers, LayerScale) saved as a HF-hub
    style timm folder whose config.json, like Virchow2's own, does not name the MLP layer."""
    import json

    from safetensors.torch import save_file
    from timm.layers import SwiGLUPacked

    folder = tmp_path_factory.mktemp("virchow2_like")
    torch.manual_seed(6)
    model = timm.create_model(
        "vit_small_patch16_224", pretrained=False, num_classes=0, reg_tokens=4, global_pool="",
        mlp_layer=SwiGLUPacked, act_layer=torch.nn.SiLU, mlp_ratio=5.3125, init_values=1e-5, img_size=64,
    ).eval()
    save_file({key: value.contiguous() for key, value in model.state_dict().items()},
              folder / "model.safetensors")
    model_args = {"img_size": 64, "init_values": 1e-5, "num_classes": 0, "reg_tokens": 4, "mlp_ratio": 5.3125,
                  "global_pool": "", "dynamic_img_size": True}
    (folder / "config.json").write_text(json.dumps(
        {"architecture": "vit_small_patch16_224", "num_classes": 0, "model_args": model_args}
    ))
    return folder, model


def test_a_gated_mlp_checkpoint_names_the_arguments_it_needs_and_loads_with_them(virchow2_folder) -> None:
    """It failed with wrong fc2 shapes only; the fix (mlp_layer and its activation) was left to guess."""
    import attnmap

    folder, reference = virchow2_folder
    hint = (r"; the checkpoint's MLP is gated \(fc1 has twice fc2's inputs\): give mlp_layer='SwiGLUPacked' "
            r"and the activation it was trained with \(act_layer='silu' for Virchow2\)$")
    with pytest.raises(InputError, match=r"model.safetensors does not fit VisionTransformer: wrong shape: "
                       r"blocks.0.mlp.fc2.weight \(384, 1020\) vs \(384, 2040\), .*" + hint) as error:
        attnmap.load_model(f"timm:{folder}")
    assert "\n" not in str(error.value)
    model = attnmap.load_model(f"timm:{folder}", mlp_layer="SwiGLUPacked", act_layer="silu")
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        torch.testing.assert_close(model(images), reference(images), rtol=0, atol=0)
        direction = torch.randn(model(images).shape, generator=torch.Generator().manual_seed(8))
    maps = attnmap.explain(model, images, "lrp", target=direction)
    assert maps.shape == (2, 64, 64) and torch.isfinite(maps).all() and maps.abs().sum() > 0


def test_the_hint_is_spelt_as_each_caller_gives_arguments(virchow2_folder, setup: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    from PIL import Image

    from attnmap.cli.main import main
    from attnmap.wsi.pipeline.config import load_config

    folder, _ = virchow2_folder
    image = tmp_path / "patch.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(image)
    with pytest.raises(SystemExit) as done:
        main(["explain", str(image), "--model", f"timm:{folder}", "-o", str(tmp_path / "maps")])
    err = capsys.readouterr().err
    assert done.value.code == 2 and len(err.strip().splitlines()) == 1
    assert ("give --model-arg mlp_layer=SwiGLUPacked and the activation it was trained with "
            "(--model-arg act_layer=silu for Virchow2)") in err
    with pytest.raises(InputError, match=r"^features.encoder: .*give features.encoder_args: "
                       r"\{mlp_layer: SwiGLUPacked\} and the activation it was trained with "
                       r"\(features.encoder_args: \{act_layer: silu\} for Virchow2\)$"):
        load_config(_config(setup, encoder=f"timm:{folder}", checkpoint=None,
                            encoder_args={"global_pool": "class_and_patch_mean"}))  # Virchow2's embedding
    from attnmap.architecture_hints import call_in_argument_form  # what `explain --workers` runs

    with pytest.raises(InputError, match=r"give --model-arg mlp_layer=SwiGLUPacked and"):
        call_in_argument_form("--model-arg", load_model, f"timm:{folder}")
    torch.manual_seed(0)
    torch.save(timm.create_model("test_vit", num_classes=0).state_dict(), tmp_path / "plain.pt")
    with pytest.raises(InputError, match=r"the checkpoint's MLP is not gated .*: leave mlp_layer out$"):
        load_model("timm:test_vit", tmp_path / "plain.pt", num_classes=0, mlp_layer="SwiGLUPacked",
                   act_layer="silu")


def test_a_checkpoint_file_says_which_normalisation_its_patches_get(setup: Path) -> None:
    """A state_dict file carries no preprocessing: the architecture's default mean and std apply,
    which for UNI's weights under vit_large_patch16_224 is 0.5 where ImageNet's was trained. The run
    says so at load, until the normalisation is given (or comes from a timm folder's config)."""
    import warnings

    from attnmap.wsi.pipeline.config import load_config
    from attnmap.wsi.pipeline.config_checks import DefaultNormalisationWarning

    default = timm.create_model("test_vit", num_classes=0, **UNI_LIKE).pretrained_cfg
    spelled = "[" + ", ".join(f"{value:g}" for value in default["mean"]) + "]"
    expected = rf"mean {re.escape(spelled)}, std .*pretrained_cfg_overlay"
    with pytest.warns(DefaultNormalisationWarning, match=expected):
        load_config(_config(setup, encoder_args=UNI_LIKE))
    imagenet = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    with warnings.catch_warnings():
        warnings.simplefilter("error", DefaultNormalisationWarning)
        load_config(_config(setup, encoder_args={**UNI_LIKE, "pretrained_cfg_overlay": imagenet}))
        load_config(_config(setup, encoder_args={}, checkpoint=None))  # random weights: nothing to say
