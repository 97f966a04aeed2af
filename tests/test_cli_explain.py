"""``attnmap explain`` / ``attnmap methods`` end to end on a tiny checkpointed timm ViT."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from attnmap.cli.main import main
from attnmap.io_utils import read_png_text
from attnmap.provenance import model_checksum, read_sidecar

MODEL = ["--model", "timm:vit_tiny_patch16_224", "--model-arg", "depth=2", "--model-arg", "img_size=64"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2, img_size=64, num_classes=4)
    torch.save({"state_dict": model.state_dict()}, root / "weights.pt")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for index, (height, width) in enumerate([(70, 90), (64, 64), (100, 80)]):
        array = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        Image.fromarray(array).save(images / f"img{index}.png")
    (images / "notes.txt").write_text("not an image")
    return root


def run_cli(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as done:
        return int(done.code or 0)
    return 0


def test_single_method_writes_overlay_and_raw_map(workspace, capsys):
    out = workspace / "out_single"
    image = workspace / "images" / "img0.png"
    code = run_cli(
        [
            "explain",
            str(image),
            *MODEL,
            "--checkpoint",
            str(workspace / "weights.pt"),
            "--method",
            "grad_rollout",
            "--target",
            "2",
            "--no-legend",  # the bare overlay: the model's input size
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert "random weights" not in capsys.readouterr().err
    heat = np.load(out / "img0_grad_rollout.npy")
    assert heat.shape == (4, 4) and np.isfinite(heat).all()
    overlay = np.asarray(Image.open(out / "img0_grad_rollout.png"))
    assert overlay.shape == (64, 64, 3)
    meta = read_png_text(out / "img0_grad_rollout.png")
    assert meta["method"] == "grad_rollout" and meta["image"] == str(image)
    assert '"target": 2' in meta["parameters"]
    record = read_sidecar(out / "img0_grad_rollout.npy")  # the raw map's provenance
    assert record["method"] == "grad_rollout" and record["image"] == str(image)
    assert record["map_shape"] == "(4, 4)" and record["model_sha256"] == meta["model_sha256"]
    state = torch.load(workspace / "weights.pt", weights_only=True)["state_dict"]
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2, img_size=64, num_classes=4)
    model.load_state_dict(state)
    assert meta["model_sha256"] == model_checksum(model)


def test_directory_and_several_methods_with_options(workspace):
    out = workspace / "out_multi"
    code = run_cli(
        [
            "explain",
            str(workspace / "images"),
            *MODEL,
            "--checkpoint",
            str(workspace / "weights.pt"),
            "--method",
            "rollout,attention",
            "--option",
            "start_layer=1",
            "--option",
            "head_fusion=max",
            "--batch-size",
            "2",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    for index in range(3):
        for name in ("rollout", "attention"):
            assert (out / f"img{index}_{name}.png").is_file()
            assert np.load(out / f"img{index}_{name}.npy").shape == (4, 4)
    assert '"start_layer": 1' in read_png_text(out / "img0_rollout.png")["parameters"]
    assert "start_layer" not in read_png_text(out / "img0_attention.png")["parameters"]
    # by default each overlay carries a title band and a colour bar around the 64-px picture
    framed = np.asarray(Image.open(out / "img0_rollout.png"))
    assert framed.shape[0] > 64 and framed.shape[1] > 64


def test_all_methods_grid_with_random_weights_warning(workspace, capsys):
    import attnmap

    out = workspace / "out_all"
    code = run_cli(
        ["explain", str(workspace / "images" / "img1.png"), *MODEL, "--method", "all", "--out", str(out)]
    )
    assert code == 0
    assert "random weights" in capsys.readouterr().err
    grid = out / "img1_all_methods.png"
    assert grid.is_file() and read_png_text(grid)["method"] == "all"
    for name in attnmap.methods():  # patch-level and pixel-level (LRP) maps alike
        heat = np.load(out / f"img1_{name}.npy")
        assert heat.shape in ((4, 4), (64, 64))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "saliency"], "unknown method"),
        (["--method", "attention", "--option", "start_layr=1"], "not accepted"),
        (["--method", "attention", "--option", "oops"], "KEY=VALUE"),
        (["--method", "attention", "--target", "9"], "out of range"),
        (["--method", "attention", "--cmap", "nocolour"], "unknown colour map"),
        (["--method", "rollout", "--option", "start_layer=x"], "option start_layer must be an integer"),
    ],
)
def test_user_errors_are_one_line(workspace, capsys, args, message):
    image = str(workspace / "images" / "img0.png")
    code = run_cli(
        [
            "explain",
            image,
            *MODEL,
            "--checkpoint",
            str(workspace / "weights.pt"),
            *args,
            "--out",
            str(workspace / "out_err"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_missing_image_and_bad_checkpoint(workspace, capsys):
    assert run_cli(["explain", str(workspace / "nope.png"), *MODEL, "--out", str(workspace / "o")]) == 2
    assert "not found" in capsys.readouterr().err
    args = [
        "explain",
        str(workspace / "images" / "img0.png"),
        "--model",
        "timm:vit_tiny_patch16_224",
        "--checkpoint",
        str(workspace / "weights.pt"),
        "--out",
        str(workspace / "o"),
    ]
    assert run_cli(args) == 2  # built at depth 12 / 224 px: the checkpoint does not fit
    assert "does not fit" in capsys.readouterr().err


def test_methods_command_lists_every_method(capsys):
    assert run_cli(["methods"]) == 0
    printed = capsys.readouterr().out
    for name in ("attention", "rollout", "attn_gradcam", "grad_rollout"):
        assert name in printed
    assert "start_layer=0" in printed


@pytest.mark.slow
def test_workers_give_the_same_maps_as_in_process(workspace):
    pytest.importorskip("distributed")
    base = [
        "explain",
        str(workspace / "images"),
        *MODEL,
        "--checkpoint",
        str(workspace / "weights.pt"),
        "--method",
        "attn_gradcam",
        "--batch-size",
        "2",
    ]
    assert run_cli([*base, "--out", str(workspace / "local")]) == 0
    assert run_cli([*base, "--workers", "1", "--out", str(workspace / "dask")]) == 0
    assert (workspace / "dask" / "run_report.json").is_file()
    for index in range(3):
        local = np.load(workspace / "local" / f"img{index}_attn_gradcam.npy")
        remote = np.load(workspace / "dask" / f"img{index}_attn_gradcam.npy")
        assert np.allclose(local, remote, atol=1e-5)


def test_explain_paths_per_image_targets_across_batches(workspace):
    import json

    from attnmap.errors import InputError
    from attnmap.vit.batch import explain_paths
    from attnmap.vit.models import load_model

    model = load_model("timm:vit_tiny_patch16_224", workspace / "weights.pt", depth=2, img_size=64)
    paths = sorted((workspace / "images").glob("*.png"))
    out = workspace / "out_targets"
    written = explain_paths(paths, model, "attn_gradcam", [3, 1, 2], out, batch_size=2, progress=False)
    assert len(written) == 6
    for path, target in zip(paths, [3, 1, 2], strict=True):
        meta = read_png_text(out / f"{path.stem}_attn_gradcam.png")
        assert json.loads(meta["parameters"])["target"] == target
    with pytest.raises(InputError, match="2 targets for 3 images"):
        explain_paths(paths, model, "attention", [1, 2], out, progress=False)


def test_headless_model_explained_along_a_direction_file(workspace, capsys):
    """A foundation-model encoder (num_classes=0) outputs an embedding: the CLI takes a direction."""
    headless = [*MODEL, "--model-arg", "num_classes=0"]
    image = str(workspace / "images" / "img0.png")
    np.save(workspace / "direction.npy", np.random.default_rng(3).normal(size=192))
    out = workspace / "out_direction"
    args = ["explain", image, *headless, "--method", "grad_rollout,lrp", "--out", str(out)]
    assert run_cli([*args, "--direction", str(workspace / "direction.npy")]) == 0
    assert np.load(out / "img0_grad_rollout.npy").shape == (4, 4)
    pixels = np.load(out / "img0_lrp.npy")
    assert pixels.shape == (64, 64) and np.isfinite(pixels).all() and np.ptp(pixels) > 0
    assert "direction (192,)" in read_sidecar(out / "img0_lrp.npy")["parameters"]
    capsys.readouterr()
    assert run_cli([*args[:-1], str(workspace / "out_none")]) == 2
    err = capsys.readouterr().err
    assert "needs a target" in err and "--direction" in err and "Traceback" not in err
    np.save(workspace / "wrong.npy", np.zeros((2, 3, 4)))
    assert run_cli([*args, "--direction", str(workspace / "wrong.npy")]) == 2
    err = capsys.readouterr().err
    assert "(D,) or (N, D)" in err and len(err.strip().splitlines()) == 1


def test_hugging_face_headless_directory(workspace, capsys):
    """hf:DIR of a headless encoder: its output object has no logits (the overlay's prediction
    crashed on it); explained along --direction, or class-independent without one."""
    transformers = pytest.importorskip("transformers")
    config = transformers.Dinov2Config(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
        patch_size=8,
    )
    torch.manual_seed(0)
    transformers.Dinov2Model(config).save_pretrained(workspace / "dinov2")
    np.save(workspace / "direction32.npy", np.random.default_rng(1).normal(size=32))
    image = str(workspace / "images" / "img0.png")
    model = ["--model", f"hf:{workspace / 'dinov2'}"]
    out = workspace / "out_hf"
    direction = ["--direction", str(workspace / "direction32.npy")]
    methods = ["--method", "lrp,grad_rollout"]
    assert run_cli(["explain", image, *model, *methods, *direction, "--out", str(out)]) == 0
    assert np.load(out / "img0_lrp.npy").shape == (32, 32)
    assert run_cli(["explain", image, *model, "--method", "rollout", "--out", str(out)]) == 0
    assert np.load(out / "img0_rollout.npy").shape == (4, 4)
    assert "Traceback" not in capsys.readouterr().err


def test_opencv_and_reversed_colour_maps_on_a_very_wide_image(workspace, tmp_path):
    wide = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (20, 300, 3), dtype=np.uint8)).save(wide)
    for cmap in ("opencv:jet", "viridis_r"):
        out = tmp_path / cmap.replace(":", "_")
        args = [str(wide), *MODEL, "--checkpoint", str(workspace / "weights.pt"), "--method", "rollout"]
        code = run_cli(["explain", *args, "--cmap", cmap, "--on", "original", "--out", str(out)])
        assert code == 0
        picture = np.asarray(Image.open(out / "wide_rollout.png"))
        assert picture.shape[1] >= 300 and picture.shape[2] == 3


def test_an_unknown_timm_name_is_one_error_without_a_random_weights_warning(workspace, capsys):
    code = run_cli(["explain", str(workspace / "images" / "img1.png"), "--model", "timm:vit_tiny_patch16_22",
                    "--out", str(workspace / "typo")])
    err = capsys.readouterr().err
    assert code == 2 and "random weights" not in err
    assert err.strip().splitlines() == [
        next(line for line in err.splitlines() if "similar: vit_tiny_patch16_224," in line)
    ]


def test_quiet_hides_the_progress_bar_anywhere_on_the_line(workspace, capsys):
    """`--quiet` promises no progress bars; explain showed its per-image bar regardless."""
    base = ["explain", str(workspace / "images"), *MODEL, "--method", "attention"]
    for index, args in enumerate(([], ["--quiet"], ["--quiet", "--workers", "1"])):
        assert run_cli([*base, "--out", str(workspace / f"out_quiet_{index}"), *args]) == 0
        err = capsys.readouterr().err
        assert ("%|" in err) == (not args), (args, err)


def test_the_bundled_patch_vit_is_explained_along_a_direction_as_the_pipeline_encodes(workspace, capsys):
    """`--model attnmap:NAME` names the bundled models; the headless patch ViT of the fine maps was
    refused ("unknown bundled model 'patch-vit'"). Its input is the encoder transform's."""
    from attnmap.data.patch_vit import load_patch_vit
    from attnmap.vit.models import load_model
    from attnmap.vit.preprocess import preprocess

    image = workspace / "images" / "img0.png"  # 90 × 70: squashed to 64 × 64, not cropped
    tensor, _ = preprocess(load_model("attnmap:patch-vit"), [str(image)])
    expected = load_patch_vit().transform(np.asarray(Image.open(image).convert("RGB")))
    assert torch.allclose(tensor[0], expected, atol=1e-6)
    np.save(workspace / "direction64.npy", np.random.default_rng(0).normal(size=64).astype(np.float32))
    out = workspace / "out_patch_vit"
    args = ["explain", str(image), "--model", "attnmap:patch-vit", "--method", "lrp", "--out", str(out)]
    assert run_cli([*args, "--direction", str(workspace / "direction64.npy")]) == 0
    heat = np.load(out / "img0_lrp.npy")
    assert heat.shape == (64, 64) and np.isfinite(heat).all() and np.abs(heat).sum() > 0
    capsys.readouterr()
    assert run_cli([*args, "--quiet"]) == 2  # headless: a class is no target
    assert "needs a target" in capsys.readouterr().err


def test_a_direction_per_image_reaches_each_image_with_workers(workspace):
    """docs/targets.md: --direction holds (D,) or one row per image. With --workers the whole
    (N, D) array went to every batch of images, which refused it ("(3, 192) but the model's output
    is (2, 192)"); each batch now explains its own rows, as the in-process run does."""
    pytest.importorskip("distributed")
    rows = np.random.default_rng(4).normal(size=(3, 192))
    np.save(workspace / "directions.npy", rows)
    model = [*MODEL, "--model-arg", "num_classes=0", "--method", "lrp", "--batch-size", "2"]
    base = ["explain", str(workspace / "images"), *model, "--direction", str(workspace / "directions.npy")]
    assert run_cli([*base, "--out", str(workspace / "rows_local")]) == 0
    assert run_cli([*base, "--workers", "1", "--out", str(workspace / "rows_dask")]) == 0
    maps = []
    for index in range(3):
        local = np.load(workspace / "rows_local" / f"img{index}_lrp.npy")
        assert np.allclose(local, np.load(workspace / "rows_dask" / f"img{index}_lrp.npy"), atol=1e-6)
        maps.append(local)
    np.save(workspace / "one_row.npy", rows[0])  # image 0 alone with its row: the same map
    image = str(workspace / "images" / "img0.png")
    alone = ["explain", image, *model, "--direction", str(workspace / "one_row.npy")]
    assert run_cli([*alone, "--out", str(workspace / "row_0")]) == 0
    assert np.allclose(np.load(workspace / "row_0" / "img0_lrp.npy"), maps[0], atol=1e-6)


def test_a_class_name_target_is_its_index(workspace, capsys):
    """`--target star` on the bundled shapes model (label_names) is `--target 4`: the same maps, and a
    rerun with the index reuses them (the records hold the index). A name the model lacks, or any
    name for a model without class names, is one line."""
    image = str(workspace / "images" / "img1.png")
    out = workspace / "out_named"
    assert run_cli(["explain", image, "--model", "attnmap:shapes-vit", "--method", "grad_rollout",
                    "--target", "Star", "--out", str(out)]) == 0
    by_name = np.load(out / "img1_grad_rollout.npy")
    assert '"target": 4' in read_png_text(out / "img1_grad_rollout.png")["parameters"]
    assert run_cli(["explain", image, "--model", "attnmap:shapes-vit", "--method", "grad_rollout",
                    "--target", "4", "--out", str(workspace / "out_indexed")]) == 0
    assert np.array_equal(np.load(workspace / "out_indexed" / "img1_grad_rollout.npy"), by_name)
    capsys.readouterr()
    timm_model = [*MODEL, "--checkpoint", str(workspace / "weights.pt")]
    for model, target, message in (
        (["--model", "attnmap:shapes-vit"], "stra", "not one of the model's 5 class names; similar: 'star'"),
        (timm_model, "cat", "names no classes"),
    ):
        code = run_cli(["explain", image, *model, "--target", target, "--out", str(workspace / "o2")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and message in err[0], err


def test_class_names_as_targets_in_the_api() -> None:
    import transformers

    import attnmap
    from attnmap.errors import InputError

    config = transformers.ViTConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, image_size=32,
        patch_size=8, id2label={0: "tumour", 1: "stroma", 2: "normal"},
        label2id={"tumour": 0, "stroma": 1, "normal": 2},
    )
    torch.manual_seed(0)
    model = transformers.ViTForImageClassification(config).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for named, indexed in (("Stroma", 1), (["tumour", 2], [0, 2])):
        for method in ("grad_rollout", "lrp"):
            assert torch.equal(attnmap.explain(model, x, method, target=named),
                               attnmap.explain(model, x, method, target=indexed))
    expected = r"target 'strom' is not one of the model's 3 class names; similar: 'stroma'"
    with pytest.raises(InputError, match=expected):
        attnmap.explain(model, x, "grad_rollout", target="strom")


def test_a_checkpoint_under_a_timm_architecture_says_its_normalisation(workspace, capsys):
    """A weights file carries no preprocessing: the run says which mean and std the images get, and
    stops saying it once ``pretrained_cfg_overlay`` gives them (and the maps change with them)."""
    image = workspace / "images" / "img1.png"
    base = ["explain", str(image), *MODEL, "--checkpoint", str(workspace / "weights.pt"), "--method",
            "attention", "--no-legend"]
    assert run_cli([*base, "--out", str(workspace / "norm_default")]) == 0
    err = capsys.readouterr().err
    assert "normalised with the architecture's default, mean (0.5, 0.5, 0.5), std (0.5, 0.5, 0.5)" in err
    overlay = "pretrained_cfg_overlay={'mean': (0.485, 0.456, 0.406), 'std': (0.229, 0.224, 0.225)}"
    out = workspace / "norm_imagenet"
    assert run_cli([*base, "--model-arg", overlay, "--out", str(out)]) == 0
    assert "normalised" not in capsys.readouterr().err
    default = np.load(workspace / "norm_default" / "img1_attention.npy")
    assert not np.allclose(np.load(out / "img1_attention.npy"), default)


def test_a_rerun_says_which_files_it_wrote_and_which_it_kept(workspace, capsys):
    """A rerun that kept every file said "wrote 6 files", as if it had redone them; then the count
    left out the maps' .npy.json records it wrote. Now it counts every file written and kept."""
    out = workspace / "out_rerun_counts"
    images = workspace / "images"
    args = ["explain", str(images / "img0.png"), str(images / "img1.png"), *MODEL,
            "--checkpoint", str(workspace / "weights.pt"), "--method", "attention", "--out", str(out)]
    assert run_cli(args) == 0
    files = sorted(out.iterdir())  # every map with its .npy.json record, and its overlay
    assert {path.name.split("_")[0] for path in files} == {"img0", "img1"}
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"wrote {len(files)} files to {out}"
    assert run_cli(args) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == (
        f"wrote 0 files to {out}; kept {len(files)} made by an earlier run with the same settings"
    )
    (out / "img1_attention.png").unlink()
    before = {path: path.stat().st_mtime_ns for path in files if path.exists()}
    time.sleep(0.01)  # a rewritten file's time differs from its old one
    assert run_cli(args) == 0
    redone = [path for path in files if path not in before or path.stat().st_mtime_ns != before[path]]
    assert {path.name for path in redone} == {f"img1_attention.{kind}" for kind in ("npy", "npy.json", "png")}
    assert capsys.readouterr().out.strip().splitlines()[-1] == (
        f"wrote {len(redone)} files to {out}; kept {len(files) - len(redone)} made by an earlier run "
        "with the same settings"
    )


def test_method_all_runs_the_methods_a_headless_model_can_and_says_why_it_skips_the_others(workspace, capsys):
    """`--method all` on a headless model without --direction wrote nothing: the gradient and LRP
    methods need a target. Now the others run; each skipped method is said once, on its own line; a
    rerun keeps everything; a skipped method's maps from an earlier run with a direction go."""
    image = workspace / "images" / "img1.png"
    out = workspace / "out_all_headless"
    args = ["explain", str(image), "--model", "attnmap:patch-vit", "--method", "all", "--out", str(out)]
    args.append("--quiet")
    np.save(workspace / "direction_all.npy", np.random.default_rng(1).normal(size=64).astype(np.float32))
    assert run_cli([*args, "--direction", str(workspace / "direction_all.npy")]) == 0
    assert (out / "img1_lrp.npy").is_file()
    from attnmap.vit.method_choice import SkippedMethodWarning

    with pytest.warns(SkippedMethodWarning) as record:
        assert run_cli(args) == 0
    skipped = [str(w.message) for w in record if w.category is SkippedMethodWarning]
    assert skipped and all("needs a target" in line and "\n" not in line for line in skipped)
    names = {line.split("method ")[1].split(" ")[0] for line in skipped}
    assert {"lrp", "transformer_attribution"} <= names and "attention" not in names
    assert len(skipped) == len(names)
    for name in names:  # the earlier run's maps of another target are gone
        assert not (out / f"img1_{name}.npy").exists() and not (out / f"img1_{name}.npy.json").exists()
    for name in ("attention", "rollout"):
        heat = np.load(out / f"img1_{name}.npy")
        assert heat.ndim == 2 and np.isfinite(heat).all()
    assert read_png_text(out / "img1_all_methods.png")["method"] == "all"
    capsys.readouterr()
    with pytest.warns(SkippedMethodWarning):
        assert run_cli(args) == 0
    assert "wrote 0 files" in capsys.readouterr().out


def test_method_all_with_no_method_able_to_run_stays_an_error(workspace, capsys, monkeypatch):
    monkeypatch.setattr("attnmap.vit.method_choice.methods", lambda: {"lrp": "", "grad_rollout": ""})
    out = workspace / "out_all_none"
    image = str(workspace / "images" / "img1.png")
    args = ["explain", image, "--model", "attnmap:patch-vit", "--method", "all", "--out", str(out), "--quiet"]
    assert run_cli(args) == 2
    err = capsys.readouterr().err
    assert "needs a target" in err and len(err.strip().splitlines()) == 1


def test_a_vit_mae_folder_is_refused_with_the_command_that_explains_its_encoder(workspace, capsys):
    """`--model hf:FOLDER` of a ViT-MAE said only which model types attnmap explains. Now its one line
    gives the ViT config.json its weights load into and the options that run it; following it works."""
    import json

    transformers = pytest.importorskip("transformers")
    sizes = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    torch.manual_seed(0)
    config = transformers.ViTMAEConfig(**sizes, image_size=32, patch_size=8, decoder_hidden_size=16,
                                       decoder_num_hidden_layers=1, decoder_intermediate_size=32)
    mae_dir = workspace / "mae"
    transformers.ViTMAEForPreTraining(config).save_pretrained(mae_dir)
    capsys.readouterr()  # transformers' saving bar
    image = str(workspace / "images" / "img1.png")
    out = workspace / "out_mae"
    assert run_cli(["explain", image, "--model", f"hf:{mae_dir}", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "vit_mae" in err
    assert f"--checkpoint {mae_dir / 'model.safetensors'}" in err
    vit_config = json.loads(err.split("config.json ")[1].split(" in a new folder")[0])
    assert vit_config["model_type"] == "vit" and vit_config["hidden_size"] == 32
    vit_dir = workspace / "mae_as_vit"
    vit_dir.mkdir()
    (vit_dir / "config.json").write_text(json.dumps(vit_config))
    args = ["explain", image, "--model", f"hf:{vit_dir}", "--checkpoint", str(mae_dir / "model.safetensors"),
            "--method", "rollout", "--out", str(out), "--quiet"]
    assert run_cli(args) == 0
    vit = transformers.ViTModel(transformers.ViTConfig(**vit_config), add_pooling_layer=False)
    assert not any(vit.load_state_dict(transformers.ViTMAEModel(config).state_dict(), strict=False))
    assert np.load(out / "img1_rollout.npy").shape == (4, 4)
