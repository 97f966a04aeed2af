"""The weight files pathologists and ViT researchers download, loaded the ways they load them.

Run (a minute or two on a 2-core CPU; nothing downloaded: each published layout is rebuilt with a
tiny seeded model, see `encoder_files_layouts` and `encoder_files_hf`)::

    PYTHONPATH=src:bench nice python bench/encoder_files_sweep.py [--only TEXT] [--no-cli]

Every file is loaded three ways and checked once: ``api``
(`attnmap.load_model(spec, checkpoint, **model_args)`),
``cli`` (`attnmap explain --model ... --checkpoint ... --model-arg ...` in process, one image) and
``wsi`` (`load_encoder`, what ``features.encoder`` / ``features.checkpoint`` /
``features.encoder_args`` of `wsi run` build); ``check`` is what `wsi run` checks before any
slide (the encoder's outline and its weights' names and shapes, read lazily). Each is classified:

- ``ok``: the loaded model's output equals the reference model's (same weights) to float tolerance,
  and its input size and normalisation are the published config's (cli: exit 0 and maps written);
- ``error``: a one-line `AttnmapError` (cli: exit 2, one line) for a file that must be refused;
- ``refused``: a one-line error for a file that should have loaded;
- ``crash``: any other exception, a message spanning lines or one passing on torch's advice to
  switch ``weights_only`` off;
- ``wrong``: it loads but computes something else (other output, normalisation, size), or loads a
  file that must be refused (a pickle that ran code is always ``wrong``);
- ``skip``: the layout cannot be built here (a transformers without the class).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import logging
import sys
import tempfile
import traceback
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encoder_files_hf import broken_files, hf_folders  # noqa: E402
from encoder_files_layouts import HUB_FOLDERS, Case, bare_files, hub_folder  # noqa: E402
from encoder_files_training import training_files  # noqa: E402

RTOL, ATOL = 1e-4, 1e-5


def _output(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    for key in ("image_embeds", "last_hidden_state", "logits"):
        if getattr(value, key, None) is not None:
            return getattr(value, key)
    raise TypeError(f"no tensor in {type(value).__name__}")


def _call(model: Any, images: torch.Tensor) -> Any:
    """A transformers model takes pixel_values, a timm one the batch."""
    transformers_model = hasattr(getattr(model, "config", None), "model_type")
    return model(pixel_values=images) if transformers_model else model(images)


def _same(a: torch.Tensor, b: torch.Tensor) -> str:
    if a.shape != b.shape:
        return f"output shape {tuple(a.shape)} vs reference {tuple(b.shape)}"
    if not torch.allclose(a.float(), b.float(), rtol=RTOL, atol=ATOL):
        return f"output differs from the reference by {float((a - b).abs().max()):.3g}"
    return ""


def _images(size: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(size)
    return torch.randn(2, 3, size, size, generator=generator)


def _check_preprocessing(case: Case, size: int, mean: Any, std: Any) -> str:
    if case.size and size != case.size:
        return f"input size {size} vs the config's {case.size}"
    if case.mean_std is None:
        return ""
    expected_mean, expected_std = case.mean_std
    if not (np.allclose(mean, expected_mean, atol=1e-6) and np.allclose(std, expected_std, atol=1e-6)):
        return f"normalisation mean {tuple(mean)} std {tuple(std)} vs the config's {case.mean_std}"
    return ""


def run_api(case: Case) -> tuple[str, str]:
    import attnmap
    from attnmap.vit.preprocess import data_config

    spec, checkpoint, kwargs = case.api
    model = attnmap.load_model(spec, checkpoint, **kwargs)
    if case.reference is None:
        return "wrong", "loaded a file that must be refused"
    config = data_config(model)
    problem = _check_preprocessing(case, int(config["input_size"][-1]), config["mean"], config["std"])
    if problem:
        return "wrong", problem
    x = _images(case.size or int(config["input_size"][-1]))
    with torch.no_grad():
        problem = _same(_output(_call(model, x)), _output(_call(case.reference, x)))
    return ("wrong", problem) if problem else ("ok", "")


def run_wsi(case: Case) -> tuple[str, str]:
    from attnmap.wsi.encoders import load_encoder

    name, checkpoint, args = case.wsi
    encoder = load_encoder(name, checkpoint, model_args=args)
    if case.reference is None:
        return "wrong", "loaded a file that must be refused"
    t = encoder.transform
    problem = _check_preprocessing(case, t.size, t.mean, t.std)
    if problem:
        return "wrong", problem
    expected = case.extra.get("interpolation")
    if expected is not None and t.interpolation != expected:
        return "wrong", f"resampling {t.interpolation} vs the config's {expected}"
    x = _images(t.size)
    reference = case.wsi_reference or case.reference
    with torch.no_grad():
        problem = _same(encoder.model(x), _output(reference(x)))
    return ("wrong", problem) if problem else ("ok", "")


def run_check(case: Case) -> tuple[str, str]:
    """What `wsi run` checks before any slide (`config_checks._encoder_checks`): the encoder's
    outline (no weights for a timm architecture), then its weights' names and shapes, read lazily."""
    from attnmap.architecture_hints import argument_form
    from attnmap.checkpoint import check_state_dict, load_state_dict
    from attnmap.vit.timm_folder import resolve_timm_folder
    from attnmap.wsi.encoders import encoder_outline

    name, checkpoint, args = case.wsi
    with argument_form("features.encoder_args"):
        encoder = encoder_outline(name, None, args)
        weights = resolve_timm_folder(name, args, checkpoint)[2]
        if weights:
            state = load_state_dict(weights, lazy=True)
            check_state_dict(encoder.model, state, weights, ignore_unexpected=True)
    if case.reference is None:
        return "wrong", "passed the check with a file that must be refused"
    x = _images(encoder.transform.size)
    with torch.no_grad():
        expected = _output((case.wsi_reference or case.reference)(x)).shape[-1]
    if encoder.feature_dim != expected:
        return "wrong", f"outline gives {encoder.feature_dim}-d features, the model {expected}-d"
    return "ok", ""


def run_cli(case: Case, work: Path) -> tuple[str, str]:
    from PIL import Image

    from attnmap.cli.main import main

    spec, checkpoint, kwargs = case.api
    image = work / "patch.png"
    if not image.exists():
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(image)
    out = work / f"out_{abs(hash(case.name))}"
    args = ["explain", str(image), "--model", spec, "--out", str(out), "--method", "rollout", "--no-legend"]
    if checkpoint is not None:
        args += ["--checkpoint", checkpoint]
    for key, value in kwargs.items():
        args += ["--model-arg", f"{key}={value}"]
    if case.reference is not None:  # headless: a direction in its output space
        x = _images(case.size or 32)
        with torch.no_grad():
            reference = _call(case.reference, x)
        out_tensor = _output(reference)
        if out_tensor.ndim == 3:
            args += ["--readout", "cls"]
        if spec.startswith("hf:") or out_tensor.shape[-1] != 5:
            direction = work / f"direction_{out_tensor.shape[-1]}.npy"
            np.save(direction, np.ones(out_tensor.shape[-1], dtype=np.float32))
            args += ["--direction", str(direction)]
    stderr = io.StringIO()
    code = 0
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            main(args)
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    except Exception:  # noqa: BLE001 - a crash is what the sweep records
        return "crash", traceback.format_exc()[-800:]
    text = stderr.getvalue().strip()
    if code == 0:
        if case.reference is None:
            return "wrong", "loaded a file that must be refused"
        return ("ok", "") if any(out.rglob("*.png")) else ("wrong", "exit 0 without maps")
    lines = [line for line in text.splitlines() if "warning" not in line]
    if code == 2 and len(lines) == 1 and "weights_only" not in lines[0]:
        return ("error" if case.reference is None else "refused"), lines[0]
    return "crash", f"exit {code}: {text[-800:]}"


def classify(case: Case, way: str, work: Path) -> tuple[str, str]:
    from attnmap.errors import AttnmapError

    marker = case.extra.get("marker")
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            runs = {"api": run_api, "wsi": run_wsi, "check": run_check}
            result = run_cli(case, work) if way == "cli" else runs[way](case)
    except AttnmapError as error:
        text = str(error)
        if "\n" in text:
            result = ("crash", f"multi-line message: {text[:300]}")
        elif "weights_only" in text:  # torch's advice to turn the safety off must never reach a user
            result = ("crash", f"torch's weights_only advice in the message: {text[:300]}")
        else:
            result = ("error" if case.reference is None else "refused", text)
    except Exception:  # noqa: BLE001 - a crash is what the sweep records
        result = ("crash", traceback.format_exc()[-800:])
    if marker is not None and Path(marker).exists():
        return "wrong", "the pickle RAN CODE"
    return result


def build_cases(root: Path) -> list[Case]:
    cases = [hub_folder(root, label) for label in HUB_FOLDERS]
    cases.append(
        hub_folder(root / "half", "H-optimus-1", torch.float16) if (root / "half").mkdir() is None else None
    )
    cases.append(
        hub_folder(root / "bf16", "Virchow2", torch.bfloat16) if (root / "bf16").mkdir() is None else None
    )
    for build in (bare_files, training_files, broken_files, _near_misses):
        sub = root / build.__name__
        sub.mkdir()
        cases += build(sub)
    try:
        sub = root / "hf"
        sub.mkdir()
        cases += hf_folders(sub)
    except ImportError:
        cases.append(Case("HF folders", None, None, None, notes="transformers missing"))
    uni = hub_folder(root / "as_hf", "UNI") if (root / "as_hf").mkdir() is None else None
    if uni is not None:  # a timm hub folder named hf:FOLDER, as its Hub page's address suggests
        uni.name = "hub folder UNI given as hf:FOLDER"
        uni.api = ("hf:" + uni.api[0][5:], None, {})
        uni.wsi = ("hf:" + uni.wsi[0][5:], None, {})
        cases.append(uni)
    virchow = hub_folder(root / "pooled", "Virchow") if (root / "pooled").mkdir() is None else None
    if virchow is not None:  # Virchow's tokens as a patch encoder without saying how they are pooled
        virchow.name, virchow.api, virchow.reference = "Virchow as an encoder without global_pool", None, None
        virchow.wsi = (virchow.wsi[0], None, {})
        cases.append(virchow)
    return [case for case in cases if case is not None]


def _near_misses(root: Path) -> list[Case]:
    """Published files loaded by architecture name with an argument left out."""
    cases = []
    for label, drop, what in (
        ("Virchow2", "reg_tokens", "registers"),
        ("Virchow2", "act_layer", "SiLU gate"),
        ("UNI2-h", "no_embed_class", "positions"),
        ("Prov-GigaPath", "patch_size", "patch"),
    ):
        hub = hub_folder(
            root / f"{label}_{drop}" if (root / f"{label}_{drop}").mkdir() is None else root, label
        )
        folder = Path(hub.api[0][5:])
        import json

        config = json.loads((folder / "config.json").read_text())
        args = {k: v for k, v in config["model_args"].items() if k not in (drop, "num_classes")}
        weights = next(folder.glob("*.bin"), None) or next(folder.glob("*.safetensors"))
        name = config["architecture"]
        wsi_args = {**args, "global_pool": "class_and_patch_mean"} if args.get("global_pool") == "" else args
        cases.append(
            Case(
                f"{label} by name without {drop} ({what})",
                (f"timm:{name}", str(weights), args),
                (f"timm:{name}", str(weights), wsi_args),
                None,
                hub.size,
                hub.mean_std,
            )
        )
    return cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help="cases whose name contains this")
    parser.add_argument("--no-cli", action="store_true")
    options = parser.parse_args(argv)
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    ways = ("api", "wsi", "check") if options.no_cli else ("api", "cli", "wsi", "check")
    counts: collections.Counter = collections.Counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cases = build_cases(root)
        for case in cases:
            if options.only and options.only.lower() not in case.name.lower():
                continue
            for way in ways:
                if way == "check" and case.wsi is not None and case.wsi[0].startswith("hf:"):
                    continue  # an hf: folder is loaded, not outlined, before the slides: the wsi way
                if (case.api if way in ("api", "cli") else case.wsi) is None:
                    if not case.notes:
                        continue  # not a way this file is loaded
                    label, text = "skip", case.notes
                else:
                    label, text = classify(case, way, root)
                counts[label] += 1
                text = text.replace("\n", " | ").replace(tmp, "TMP")
                print(f"{label:8s} {way:5s} {case.name}: {text[:400]}")
    print(
        "\ncounts: "
        + ", ".join(f"{key} {counts[key]}" for key in ("ok", "error", "refused", "crash", "wrong", "skip"))
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
