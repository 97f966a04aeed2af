"""Model and checkpoint loading as users meet it: the layouts training frameworks and pathology
foundation models ship (Lightning, DDP, DINO / DINOv2 teachers, headless encoders, another input
size) load to exactly the weights in the file, or are refused in one line naming the problem."""

from __future__ import annotations

import warnings
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from attnmap.checkpoint import check_state_dict
from attnmap.errors import InputError
from attnmap.vit.models import load_model
from attnmap.wsi.encoders import load_encoder

SPEC = "timm:vit_tiny_patch16_224"
SMALL = {"depth": 1, "img_size": 32}


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    yield


def _vit(seed: int, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, **{**SMALL, **kwargs}).eval()


def _prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + key: value for key, value in state.items()}


def _trunk(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value for key, value in model.state_dict().items() if not key.startswith("head.")}


def _same_weights(model: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    loaded = model.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[key], expected[key]) for key in expected)


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message, message
    return message


def _layouts(classifier: torch.nn.Module, student: torch.nn.Module) -> dict[str, tuple[object, bool]]:
    """name -> (file content, whether the loaded model keeps the classifier)."""
    full, trunk, other = classifier.state_dict(), _trunk(classifier), _trunk(student)
    dino_head = {"head.mlp.0.weight": torch.zeros(8, 192), "head.last_layer.weight_g": torch.ones(1)}
    return {
        "backbone prefix": (_prefixed("backbone.", full), True),
        "encoder prefix in state_dict": ({"state_dict": _prefixed("encoder.", full)}, True),
        "Lightning module with its own classifier": (
            {"state_dict": {**_prefixed("model.backbone.", trunk), "model.fc.weight": torch.zeros(2, 192)},
             "epoch": 3, "hyper_parameters": {"data_dir": PurePosixPath("/data/tiles"), "lr": 1e-4}}, False),
        "DINO teacher and student": (
            {"teacher": {**_prefixed("backbone.", trunk), **dino_head},
             "student": _prefixed("module.backbone.", other), "epoch": 9}, False),
        "DINOv2 teacher_checkpoint": (
            {"teacher": {**_prefixed("backbone.", trunk), "dino_head.mlp.0.weight": torch.zeros(8, 192),
                         "ibot_head.mlp.0.weight": torch.zeros(8, 192)}}, False),
        "DINOv2 training state, student and teacher": (
            {"model": {**_prefixed("student.backbone.", other), **_prefixed("teacher.backbone.", trunk),
                       "teacher.dino_head.mlp.0.weight": torch.zeros(8, 192)}, "iteration": 5}, False),
        "headless encoder": (trunk, False),
        "MoCo v3 training state, base and momentum encoders": (
            {"state_dict": {
                **_prefixed("module.base_encoder.", trunk), **_prefixed("module.momentum_encoder.", other),
                "module.base_encoder.head.0.weight": torch.zeros(8, 192),
                "module.momentum_encoder.head.0.weight": torch.zeros(8, 192),
                "module.predictor.0.weight": torch.zeros(8, 8)},
             "epoch": 3, "arch": "vit_small", "optimizer": {"state": {}}}, False),
        "I-JEPA training state, context and target encoders": (
            {"encoder": _prefixed("module.", other), "target_encoder": _prefixed("module.", trunk),
             "predictor": {"module.predictor_embed.weight": torch.zeros(8, 192)}, "epoch": 1}, False),
        "MAE pre-training, encoder with its pixel decoder": (
            {"model": {
                **trunk, "mask_token": torch.zeros(1, 1, 192), "decoder_embed.weight": torch.zeros(8, 192),
                "decoder_pos_embed": torch.zeros(1, 5, 8), "decoder_blocks.0.norm1.weight": torch.zeros(8),
                "decoder_norm.weight": torch.zeros(8), "decoder_pred.weight": torch.zeros(768, 8)},
             "optimizer": {"state": {}}, "epoch": 399}, False),
    }


@pytest.mark.parametrize("layout", list(_layouts(_vit(0, num_classes=5), _vit(1))))
def test_framework_layouts_load_exactly_the_weights_in_the_file(tmp_path: Path, layout: str) -> None:
    """These were refused ('holds no state_dict', or every key missing and unexpected, a MAE's
    decoder unexpected, MoCo v3's two encoders a tie) or, for a headless encoder, refused for want of
    a random head; the training states hold two copies of the backbone and the one loaded is the copy
    the method evaluates (DINO's teacher, MoCo v3's base encoder, I-JEPA's target encoder)."""
    classifier = _vit(0, num_classes=5)
    content, keeps_head = _layouts(classifier, _vit(1))[layout]
    torch.save(content, tmp_path / "weights.pth")
    model = load_model(SPEC, tmp_path / "weights.pth", **SMALL)
    expected = classifier.state_dict() if keeps_head else _trunk(classifier)
    _same_weights(model, expected)
    assert model.num_classes == (5 if keeps_head else 0)
    direct = _vit(0, num_classes=5 if keeps_head else 0)
    direct.load_state_dict(expected)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(images), direct(images))


def test_classifier_size_follows_the_checkpoint_unless_asked(tmp_path: Path) -> None:
    classifier = _vit(0, num_classes=5)
    save_file(classifier.state_dict(), str(tmp_path / "classifier.safetensors"))
    torch.save(_trunk(classifier), tmp_path / "trunk.bin")
    headless = load_model(SPEC, tmp_path / "classifier.safetensors", num_classes=0, **SMALL)
    _same_weights(headless, _trunk(classifier))  # the head is left out, as asked
    as_argument = load_model(SPEC, tmp_path / "classifier.safetensors", **{**SMALL, "num_classes": 0})
    assert as_argument.num_classes == 0  # --model-arg num_classes=0 is the same request
    with pytest.raises(InputError, match=r"wrong shape: head.bias \(5,\) vs \(7,\), head.weight") as error:
        load_model(SPEC, tmp_path / "classifier.safetensors", num_classes=7, **SMALL)
    _one_line(error)
    with pytest.raises(InputError, match=r"trunk.bin does not fit VisionTransformer: missing: head.bias, "
                       r"head.weight$") as error:
        load_model(SPEC, tmp_path / "trunk.bin", num_classes=5, **SMALL)  # no random head
    _one_line(error)


def test_position_embeddings_of_another_grid_are_resampled_as_timm_does(tmp_path: Path) -> None:
    """Weights trained at 64 px (4x4 patches) for a model built at 32 px: refused before, now
    resampled by timm's own checkpoint filter, as timm.create_model(pretrained=True) does."""
    trained = _vit(0, num_classes=3, img_size=64)
    torch.save({"model": trained.state_dict()}, tmp_path / "at64.pth")
    model = load_model(SPEC, tmp_path / "at64.pth", **SMALL)
    torch.save(trained.state_dict(), tmp_path / "plain.pth")
    overlay = {"file": str(tmp_path / "plain.pth"), "num_classes": 3}
    reference = timm.create_model(
        "vit_tiny_patch16_224", pretrained=True, pretrained_cfg_overlay=overlay, num_classes=3, **SMALL
    ).eval()
    _same_weights(model, reference.state_dict())
    assert model.pos_embed.shape == (1, 5, 192)


def test_original_dinov2_layout_with_registers_loads_into_the_timm_model(tmp_path: Path) -> None:
    """A DINOv2-repository teacher (``backbone.`` keys, ``mask_token``, ``register_tokens``, the CLS
    position inside ``pos_embed``) is converted by timm's filter into the timm ViT with registers."""
    target = _vit(0, num_classes=0, reg_tokens=4, no_embed_class=True, class_token=True)
    own = target.state_dict()
    cls_position = torch.randn(1, 1, 192)
    moved = ("reg_token", "cls_token", "pos_embed")
    original = {key: value for key, value in own.items() if key not in moved}
    original.update({
        "register_tokens": own["reg_token"], "mask_token": torch.zeros(1, 192),
        "cls_token": own["cls_token"] - cls_position,
        "pos_embed": torch.cat([cls_position, own["pos_embed"]], dim=1),
    })
    torch.save({"teacher": _prefixed("backbone.", original)}, tmp_path / "teacher_checkpoint.pth")
    model = load_model(SPEC, tmp_path / "teacher_checkpoint.pth", reg_tokens=4, no_embed_class=True, **SMALL)
    loaded = model.state_dict()
    assert loaded.keys() == own.keys()
    assert all(torch.allclose(loaded[key], own[key], atol=1e-6) for key in own)


def test_refusals_are_one_line_naming_the_problem(tmp_path: Path) -> None:
    registers = _vit(0, num_classes=0, reg_tokens=4, no_embed_class=True)
    torch.save(registers.state_dict(), tmp_path / "registers.pth")
    with pytest.raises(InputError, match=r"registers.pth does not fit VisionTransformer: unexpected: "
                       r"reg_token; wrong shape: pos_embed \(1, 4, 192\) vs \(1, 5, 192\); it has 4 "
                       r"register tokens: build the model with reg_tokens=4; its position embeddings cover "
                       r"the patches only: build the model with no_embed_class=True$") as error:
        load_model(SPEC, tmp_path / "registers.pth", num_classes=0, **SMALL)  # never silently dropped
    _one_line(error)
    torch.save(_vit(0, num_classes=0).state_dict(), tmp_path / "plain.pth")
    with pytest.raises(InputError, match=r"plain.pth does not fit VisionTransformer: missing: reg_token; "
                       r"wrong shape: .*; it has no register tokens$"):
        load_model(SPEC, tmp_path / "plain.pth", reg_tokens=4, **SMALL)
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), tmp_path / "resnet.pth")
    with pytest.raises(InputError, match=r"resnet.pth does not fit VisionTransformer: none of its weights "
                       r"are there \(the file has bn1.bias, .*another architecture\?\)$") as error:
        load_model(SPEC, tmp_path / "resnet.pth", **SMALL)
    _one_line(error)
    two = {"model": _prefixed("model.", _trunk(_vit(0))), "ema": _prefixed("model_ema.", _trunk(_vit(1)))}
    torch.save({"state_dict": {**two["model"], **two["ema"]}}, tmp_path / "two.ckpt")
    with pytest.raises(InputError, match=r"two.ckpt holds the model's weights under each of model., "
                       r"model_ema.: save the copy to use on its own$"):
        load_model(SPEC, tmp_path / "two.ckpt", **SMALL)
    torch.save({"epoch": 3, "model": _vit(0)}, tmp_path / "whole.pth")  # torch.save(model)
    with pytest.raises(InputError, match=r"^cannot read checkpoint .*whole.pth: not a weights-only torch "
                       r"or safetensors file: it holds a pickled timm.models.vision_transformer."
                       r"VisionTransformer object .*\(torch.save\(model.state_dict\(\), PATH\)\)$"):
        load_model(SPEC, tmp_path / "whole.pth", **SMALL)
    for given in ({"num_heads": 5}, {"depth": -1}, {"mlp_ratio": -2.0}):  # timm's assertions, errors
        with pytest.raises(InputError, match=r"^cannot build timm model 'vit_tiny_patch16_224' with \{"):
            load_model(SPEC, tmp_path / "resnet.pth", **{**SMALL, **given})
        with pytest.raises(InputError, match=r"^cannot build timm model 'test_vit' with \{'[a-z_]+': -?\d"):
            load_encoder("timm:test_vit", model_args=given)
    data = (tmp_path / "resnet.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"^cannot read checkpoint .*cut.pth: .*zip archive[^.]*\)$") as err:
        load_model(SPEC, tmp_path / "cut.pth", **SMALL)  # without torch's paragraph of advice
    _one_line(err)
    several = r"checkpoint .* is a folder, not a weights file: give one of the weights files inside it "
    with pytest.raises(InputError, match=several + r"\(cut\.pth, [^)]+\)$"):  # names to pick from
        load_model(SPEC, tmp_path, **SMALL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(_vit(0), torch.zeros(1, 3, 32, 32)).save(str(tmp_path / "scripted.pt"))
    for given in (tmp_path / "scripted.pt", f"torchscript:{tmp_path / 'scripted.pt'}"):
        with pytest.raises(InputError, match="a TorchScript model cannot be explained .* give the "
                           r"model's state_dict \(torch.save\(model.state_dict\(\), PATH\)\)$"):
            load_model(SPEC, given, **SMALL)


def test_cli_explains_a_dino_teacher_as_the_directly_built_encoder(tmp_path: Path, capsys) -> None:
    """``attnmap explain --checkpoint teacher.pth`` gives the maps of the timm model built with those
    weights; a checkpoint that does not fit is one line and exit status 2."""
    from cli_runner import run_cli
    from PIL import Image

    from attnmap import explain, preprocess

    classifier = _vit(0, num_classes=5)
    teacher = {**_prefixed("backbone.", _trunk(classifier)), "head.mlp.0.weight": torch.ones(2)}
    torch.save({"teacher": teacher}, tmp_path / "teacher.pth")
    image = tmp_path / "patch.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(image)
    direction = np.random.default_rng(1).normal(size=192)
    np.save(tmp_path / "direction.npy", direction)
    model_args = ["--model-arg", "depth=1", "--model-arg", "img_size=32"]
    code, _, err = run_cli(capsys, "explain", image, "--model", SPEC, *model_args, "--checkpoint",
                           tmp_path / "teacher.pth", "--method", "grad_rollout", "--direction",
                           tmp_path / "direction.npy", "--out", tmp_path / "maps")
    assert code == 0, err
    direct = _vit(0, num_classes=0)
    direct.load_state_dict(_trunk(classifier))
    images, _ = preprocess(direct, [image])
    expected = explain(direct, images, "grad_rollout", torch.as_tensor(direction, dtype=torch.float64))
    np.testing.assert_allclose(np.load(tmp_path / "maps" / "patch_grad_rollout.npy"), expected[0].numpy(),
                               rtol=1e-5, atol=1e-7)
    torch.save(_vit(0, num_classes=0, reg_tokens=4).state_dict(), tmp_path / "registers.pth")
    code, _, err = run_cli(capsys, "explain", image, "--model", SPEC, *model_args, "--checkpoint",
                           tmp_path / "registers.pth", "--out", tmp_path / "maps2")
    assert code == 2 and err.strip().count("\n") == 0 and "unexpected: reg_token" in err, err


def _hf_tiny(transformers, config_name: str, model_name: str, seed: int, **extra):
    sizes = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                 image_size=32, patch_size=8)
    torch.manual_seed(seed)
    return getattr(transformers, model_name)(getattr(transformers, config_name)(**sizes, **extra)).eval()


def test_hugging_face_folders_broken_or_mismatched_are_one_line(tmp_path: Path) -> None:
    """A cut weights file in an hf: folder was safetensors' own traceback; weights of another shape
    pointed the user at 'the above report', a table transformers printed."""
    transformers = pytest.importorskip("transformers")
    saved = _hf_tiny(transformers, "Dinov2Config", "Dinov2Model", 0)
    saved.save_pretrained(tmp_path / "dinov2")
    cut = tmp_path / "cut"
    saved.save_pretrained(cut)
    (cut / "model.safetensors").write_bytes((cut / "model.safetensors").read_bytes()[:400])
    with pytest.raises(InputError, match=r"^cannot load hf:.*cut as Dinov2Model: ") as error:
        load_model(f"hf:{cut}")
    _one_line(error)
    wide = tmp_path / "wide"
    _hf_tiny(transformers, "Dinov2Config", "Dinov2Model", 0, mlp_ratio=8).save_pretrained(wide)
    (tmp_path / "dinov2" / "config.json").replace(wide / "config.json")  # mlp_ratio 4 in the config
    with pytest.raises(InputError, match=r"^hf:.*wide: the saved weights do not fit Dinov2Model as its "
                       r"config builds it: wrong shape: .*mlp.fc1.bias \(256,\) vs \(128,\)") as error:
        load_model(f"hf:{wide}")
    _one_line(error)


def test_hugging_face_folder_with_a_checkpoint_in_either_naming(tmp_path: Path) -> None:
    """hf:FOLDER with --checkpoint: the file's weights replace the folder's, whether saved by
    save_pretrained (its serialised names) or by torch.save(model.state_dict()); a file of another
    family is refused. These were all 'does not fit' before."""
    transformers = pytest.importorskip("transformers")
    _hf_tiny(transformers, "ViTConfig", "ViTModel", 0).save_pretrained(tmp_path / "vit")
    tuned = _hf_tiny(transformers, "ViTConfig", "ViTModel", 1)
    tuned.save_pretrained(tmp_path / "tuned")
    torch.save({"state_dict": _prefixed("model.backbone.", tuned.state_dict())}, tmp_path / "tuned.ckpt")
    images = torch.randn(1, 3, 32, 32)
    for checkpoint in (tmp_path / "tuned" / "model.safetensors", tmp_path / "tuned.ckpt"):
        model = load_model(f"hf:{tmp_path / 'vit'}", checkpoint)
        _same_weights(model, tuned.state_dict())
        with torch.no_grad():
            assert torch.equal(model(pixel_values=images)[0], tuned(pixel_values=images)[0])
    _hf_tiny(transformers, "Dinov2Config", "Dinov2Model", 0).save_pretrained(tmp_path / "dinov2")
    with pytest.raises(InputError, match=r"^hf:.*vit with checkpoint .*dinov2/model.safetensors: \d+ "
                       r"weights of ViTModel are not in the saved files"):
        load_model(f"hf:{tmp_path / 'vit'}", tmp_path / "dinov2" / "model.safetensors")
    with pytest.raises(InputError, match=r"vit is a folder, not a weights file: a Hugging Face model folder "
                       r"is given as the model, hf:FOLDER$"):
        load_model(SPEC, tmp_path / "vit", **SMALL)
    with pytest.raises(InputError, match=r"none of its weights are there \(it holds a Hugging Face model: "
                       r"give its folder as hf:FOLDER\)$"):
        load_model(SPEC, tmp_path / "vit" / "model.safetensors", **SMALL)


def test_patch_encoders_use_the_same_rule(tmp_path: Path) -> None:
    """features.checkpoint for a timm encoder: a DINO teacher loads (it failed 'holds no
    state_dict'); the configuration check accepts what the encoder loads; LayerScale, blocks or
    register tokens the encoder lacks are an error (they were dropped without a word)."""
    torch.manual_seed(0)
    trained = timm.create_model("test_vit", pretrained=False)
    trunk = _trunk(trained)
    torch.save({"teacher": {**_prefixed("backbone.", trunk), "dino_head.last_layer.weight": torch.ones(3)}},
               tmp_path / "teacher.pth")
    torch.save(trained.state_dict(), tmp_path / "plain.pth")
    encoder = load_encoder("timm:test_vit", tmp_path / "teacher.pth")
    reference = load_encoder("timm:test_vit", tmp_path / "plain.pth")
    _same_weights(encoder.model, reference.model.state_dict())
    patch = torch.randn(2, 3, encoder.transform.size, encoder.transform.size)
    with torch.no_grad():
        assert torch.equal(encoder.model(patch), reference.model(patch))
    from attnmap.checkpoint import load_state_dict

    with torch.device("meta"):
        outline = timm.create_model("test_vit", pretrained=False, num_classes=0)
    check_state_dict(outline, load_state_dict(tmp_path / "teacher.pth"), "t.pth", ignore_unexpected=True)
    scaled = timm.create_model("test_vit", pretrained=False, num_classes=0, init_values=1e-5)  # UNI-like
    torch.save(scaled.state_dict(), tmp_path / "layerscale.pth")
    with pytest.raises(InputError, match=r"layerscale.pth does not fit VisionTransformer: unexpected: "
                       r"blocks.0.ls1.gamma, "):
        load_encoder("timm:test_vit", tmp_path / "layerscale.pth")  # its LayerScale is Identity here
    with pytest.raises(InputError, match=r"unexpected: blocks.0.ls1.gamma, "):
        load_model("timm:test_vit", tmp_path / "layerscale.pth")  # a headless ViT to explain: the same
    built = load_encoder("timm:test_vit", tmp_path / "layerscale.pth", model_args={"init_values": 1e-5})
    _same_weights(built.model, scaled.state_dict())  # features.encoder_args builds the architecture
    torch.save(timm.create_model("test_vit", pretrained=False, depth=8).state_dict(), tmp_path / "deeper.pth")
    with pytest.raises(InputError, match=r"deeper.pth does not fit VisionTransformer: unexpected: blocks.6."):
        load_encoder("timm:test_vit", tmp_path / "deeper.pth")  # 6 of its 8 blocks loaded, silently
    torch.save({**trunk, "reg_token": torch.zeros(1, 4, 64)}, tmp_path / "registers.pth")
    with pytest.raises(InputError, match=r"registers.pth does not fit VisionTransformer: unexpected: "
                       r"reg_token; it has 4 register tokens: build the model with reg_tokens=4$"):
        load_encoder("timm:test_vit", tmp_path / "registers.pth")


def test_encoder_args_enter_the_features_fingerprint_only_when_given() -> None:
    """features.encoder_args changes the encoder, so its features; a configuration without them keeps
    the fingerprint it had before the option existed (no needless recomputation)."""
    from attnmap.wsi.pipeline.config import FeaturesConfig
    from attnmap.wsi.pipeline.fingerprint import encoder_identity

    plain = encoder_identity(FeaturesConfig(encoder="timm:test_vit"))
    assert set(plain) == {"encoder", "checkpoint", "input_size", "seed"}
    scaled = encoder_identity(FeaturesConfig(encoder="timm:test_vit", encoder_args={"init_values": 1e-5}))
    assert scaled == {**plain, "encoder_args": {"init_values": 1e-5}}


def test_full_siglip_folder_gives_its_vision_tower_quietly(tmp_path: Path) -> None:
    """A whole SigLIP image-text folder where a vision model is expected: its vision tower with
    exactly the saved weights, without transformers' table of the text tower's unused weights."""
    import logging

    transformers = pytest.importorskip("transformers")
    layers = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    config = transformers.SiglipConfig(
        vision_config=dict(layers, image_size=32, patch_size=8), text_config=dict(layers, vocab_size=99)
    )
    torch.manual_seed(0)
    pair = transformers.SiglipModel(config).eval()
    pair.save_pretrained(tmp_path)
    said: list[str] = []
    listener = logging.Handler(logging.WARNING)
    listener.emit = lambda record: said.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("transformers").addHandler(listener)
    try:
        model = load_model(f"hf:{tmp_path}")
    finally:
        logging.getLogger("transformers").removeHandler(listener)
    assert type(model).__name__ == "SiglipVisionModel"
    loaded = {key.removeprefix("vision_model."): value for key, value in model.state_dict().items()}
    tower = pair.vision_model.state_dict()
    assert loaded.keys() == tower.keys() and all(torch.equal(loaded[k], tower[k]) for k in tower)
    assert not any("LOAD REPORT" in message for message in said), said


def _uni_like_folder(folder: Path) -> torch.nn.Module:
    """A folder as UNI-like foundation models ship on the Hub: timm's config.json and weights."""
    import json

    torch.manual_seed(0)
    encoder = timm.create_model("test_vit", pretrained=False, num_classes=0, init_values=1e-5).eval()
    folder.mkdir()
    config = {"architecture": "test_vit", "num_classes": 0, "model_args": {"init_values": 1e-5}}
    (folder / "config.json").write_text(json.dumps(config))
    save_file(encoder.state_dict(), str(folder / "model.safetensors"))
    return encoder


def test_a_timm_hub_folder_loads_with_its_architecture_arguments_and_weights(tmp_path: Path) -> None:
    """timm:FOLDER (or hf:FOLDER) of a timm config.json + weights: 'timm has no model' and 'holds a
    model (no architectures)' before; now the saved architecture with its model_args and weights."""
    encoder = _uni_like_folder(tmp_path / "uni")
    for spec in (f"timm:{tmp_path / 'uni'}", f"hf:{tmp_path / 'uni'}"):
        model = load_model(spec)
        _same_weights(model, encoder.state_dict())
    patches = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        assert torch.equal(model(patches), encoder(patches))
    built = load_encoder(f"timm:{tmp_path / 'uni'}")  # features.encoder timm:FOLDER, the same rule
    _same_weights(built.model, encoder.state_dict())
    from attnmap.wsi.pipeline.config import FeaturesConfig
    from attnmap.wsi.pipeline.fingerprint import encoder_identity

    identity = encoder_identity(FeaturesConfig(encoder=f"timm:{tmp_path / 'uni'}"))
    assert set(identity["folder"]) == {"config", "weights"}  # new weights in the folder: new features
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"^timm:.*empty is a folder without a timm config.json"):
        load_model(f"timm:{tmp_path / 'empty'}")
    with pytest.raises(InputError, match=r"^timm:.*empty is a folder without a timm config.json"):
        load_encoder(f"timm:{tmp_path / 'empty'}")
    (tmp_path / "uni" / "model.safetensors").rename(tmp_path / "uni" / "elsewhere.safetensors")
    with pytest.raises(InputError, match=r"uni holds a timm config.json but no model.safetensors or "
                       r"pytorch_model.bin \(whole, or sharded with their .index.json\)$"):
        load_model(f"timm:{tmp_path / 'uni'}")


def test_load_model_device_and_num_classes_it_cannot_honour_are_one_line() -> None:
    """``device="gpu"`` was torch's RuntimeError listing every device type, ``device="cuda"`` on a
    machine without one the driver's RuntimeError; ``num_classes`` for a bundled model, which has
    its own classes, was silently ignored. Each is now an `InputError` naming the argument."""
    with pytest.raises(InputError, match=r"^unknown device 'gpu'"):
        load_model("attnmap:shapes-vit", device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match=r"^device 'cuda' was asked for but no CUDA GPU is available"):
            load_model("attnmap:shapes-vit", device="cuda")
    assert next(load_model("attnmap:shapes-vit", device="auto").parameters()).device.type in ("cpu", "cuda")
    with pytest.raises(InputError, match=r"^num_classes applies to timm and hf: models.*attnmap:shapes-vit"):
        load_model("attnmap:shapes-vit", num_classes=3)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"checkpoint": 123}, r"^checkpoint must be a path \(str or Path\) or a state_dict, got int$"),
        ({"checkpoint": ["vit.pth"]}, r"^checkpoint must be a path .* or a state_dict, got list$"),
        ({"num_classes": -1}, r"^num_classes must be a whole number >= 0 \(0: headless\), got -1"),
        ({"num_classes": "5"}, r"^num_classes must be a whole number >= 0 \(0: headless\), got '5'"),
        ({"num_classes": True}, r"^num_classes must be a whole number >= 0 \(0: headless\), got True"),
        ({"num_classes": 2.0}, r"^num_classes must be a whole number >= 0 \(0: headless\), got 2.0"),
    ],
)
def test_load_model_arguments_of_the_wrong_kind_are_named(arguments: dict, message: str) -> None:
    """checkpoint=123 or a list was os.fspath's TypeError; num_classes=-1 built a headless model
    without a word, and "5", True or 2.0 failed inside timm with a message about '>' or empty()."""
    with pytest.raises(InputError, match=message):
        load_model("timm:vit_tiny_patch16_224", depth=1, img_size=32, **arguments)
    model = load_model("timm:vit_tiny_patch16_224", depth=1, img_size=32, num_classes=np.int64(3))
    assert model.num_classes == 3


def test_a_state_dict_given_in_memory_that_does_not_fit_is_one_short_line() -> None:
    """load_model takes a state_dict in memory as its checkpoint; when it did not fit, the message
    named it by its repr: 40 kB of tensors over hundreds of lines."""
    other = timm.create_model("vit_small_patch16_224", img_size=32, depth=1).state_dict()
    with pytest.raises(InputError, match=r"^checkpoint \(a state_dict in memory\) does not fit") as error:
        load_model("timm:vit_tiny_patch16_224", checkpoint=other, img_size=32, depth=1)
    assert "\n" not in str(error.value) and "tensor(" not in str(error.value)


def test_a_classifier_of_another_size_names_num_classes(tmp_path: Path) -> None:
    """num_classes=3 against a checkpoint with a 5-class head listed the head's shapes only; the
    argument to change (or leave out: the checkpoint's size is then taken) was not named."""
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, depth=1, num_classes=5)
    torch.save(model.state_dict(), tmp_path / "five.pth")
    message = r"head.weight \(5, 192\) vs \(3, 192\).*its classifier has 5 classes: build the model with "
    with pytest.raises(InputError, match=message + r"num_classes=5 or leave num_classes out$"):
        load_model("timm:vit_tiny_patch16_224", checkpoint=tmp_path / "five.pth", img_size=32, depth=1,
                   num_classes=3)
    assert load_model("timm:vit_tiny_patch16_224", checkpoint=tmp_path / "five.pth", img_size=32,
                      depth=1).num_classes == 5


def test_an_unknown_model_kind_is_said_before_model_arguments_are_judged() -> None:
    """"TIMM:vit_..." with depth=1 was told that model arguments 'apply to timm models, not to
    'TIMM:vit_...'' (it is one, in capitals); the unknown kind is now said first, with the spelling."""
    with pytest.raises(InputError, match=r"^unknown model kind 'TIMM' .*kinds are lower case: timm:NAME"):
        load_model("TIMM:vit_tiny_patch16_224", depth=1)
    with pytest.raises(InputError, match=r"^unknown model kind 'torchvision' in 'torchvision:vit_b_16'"):
        load_model("torchvision:vit_b_16", depth=1)
