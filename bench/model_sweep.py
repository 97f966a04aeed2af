"""Every ViT-like model people can build, through every method: does `attnmap.explain` hold up?

Run (about 5-10 minutes on a loaded 2-core machine; no download, random weights)::

    PYTHONPATH=src nice python bench/model_sweep.py            # everything
    PYTHONPATH=src nice python bench/model_sweep.py --only vit_small,hf:Dinov2   # names containing these
    PYTHONPATH=src nice python bench/model_sweep.py --no-others --no-hf          # the timm ViT families only
    PYTHONPATH=src nice python bench/model_sweep.py --variants   # also headless, other input sizes

What it builds:
- every timm registered name whose module builds ViT attention stacks (``vision_transformer``,
  ``deit``, ``eva``, ``beit``, ``vision_transformer_relpos``, ``vision_transformer_sam``,
  ``naflexvit``, ``vision_transformer_hybrid``, ``deepseek_vit``, ``gemma4_vit``, ``qwen3_vit``),
  ``pretrained=False`` and shrunk: the first of (img_size=32, patch_size=8, embed_dim=32, depth=2,
  num_heads=4), then fewer of those arguments, that the constructor takes and whose model runs a
  forward pass on the images. Names giving the same tiny model (same classes, parameter shapes and
  scalar settings: the names differ only in pretrained tag, resolution or width) are run once.
  A name whose pretrained config has ``num_classes=0`` is built headless and explained along a
  seeded direction in its output space; the others get 5 classes and target None.
- one model of every other timm module (the smallest by name: tiny, nano, xxs, small...): these are
  not plain ViTs, and attnmap must refuse them in one line (CaiT, XCiT, Swin, Twins, PiT, LeViT...).
- Hugging Face transformers vision models from tiny configs (no download): ViT, DeiT, BEiT,
  Data2VecVision, DINOv2 (with registers), DINOv3, CLIP vision, SigLIP/SigLIP2 vision, ViTMAE,
  ViTMSN, I-JEPA, ViT hybrid, and their image-classification heads.

What it prints: one row per (model, method): ``ok`` (finite, on the right grid, not constant),
``ok-flat`` (all zero or constant and attnmap warned with `FlatMapWarning`), ``refused`` (an
`attnmap.errors.AttnmapError` with a one-line message, shown), ``crash`` (any other exception, or an
attnmap error message spanning lines), ``bad`` (NaN/inf, a grid other than the model's patch grid
(pixels for pixel methods), constant without the warning, the same map for two different
images, or an image's map in the batch differing from its map alone), and ``skip`` (the model's own
build or forward pass fails at every size tried, or every build is over 40M parameters (120M for
the other modules, built at their own size): not attnmap's doing). Then a count of each class per
source (timm ViT, timm other, HF) and in all. Per architecture, it also checks that the attention
methods and the LRP methods start from the same token rows (the read-out; a row ``(read-out rows) |
bad`` when they differ) and counts same / differ / n/a.
"""

from __future__ import annotations

import argparse
import functools
import signal
import sys
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from attnmap.errors import AttnmapError
from attnmap.vit.adapters import call_model
from attnmap.vit.explain import FlatMapWarning, explain
from attnmap.vit.registry import get_method, methods
from attnmap.vit.targets import output_tensor

SIZE, PATCH, WIDTH, HEADS, DEPTH = 32, 8, 32, 4, 2
VIT_MODULES = (
    "vision_transformer", "deit", "eva", "beit", "vision_transformer_relpos", "vision_transformer_sam",
    "naflexvit", "vision_transformer_hybrid", "deepseek_vit", "gemma4_vit", "qwen3_vit",
)
MAX_PARAMETERS = 40_000_000
BATCH_TOLERANCE = {torch.float32: 1e-3, torch.float64: 1e-9}  # batched vs single kernels: round-off
SIZE_WORDS = ("atto", "femto", "pico", "nano", "xxs", "xs", "tiny", "t_", "small", "s_", "mini", "b0", "18")


@dataclass
class Built:
    name: str
    source: str  # "timm-vit", "timm-other", "hf"
    model: nn.Module | None
    images: torch.Tensor | None = None
    target: Any = None
    patch: tuple[int, int] | None = None  # the model's own patch size, for the expected grid
    note: str = ""
    aliases: list[str] = field(default_factory=list)


# -- timm ------------------------------------------------------------------------------------------
def _timm_attempts(module: str) -> list[dict[str, Any]]:
    tiny = dict(img_size=SIZE, patch_size=PATCH, embed_dim=WIDTH, depth=DEPTH, num_heads=HEADS)
    attempts = [
        tiny,
        dict(tiny, num_kv_heads=(HEADS // 2,) * DEPTH),  # grouped-query attention per block (Sapiens2)
        dict(tiny, img_size=48),  # a grid the head's pooling kernel divides (Gemma 4: 3 x 3)
        {k: v for k, v in tiny.items() if k != "depth"},  # per-block settings (kv heads, windows)
        {k: v for k, v in tiny.items() if k != "patch_size"},
        {k: v for k, v in tiny.items() if k not in ("patch_size", "depth")},
        dict(img_size=SIZE, depth=DEPTH),
        dict(img_size=64, depth=DEPTH),
        dict(depth=DEPTH),
        {},
    ]
    if module == "vision_transformer_hybrid":  # a CNN stem of stride 16-32: a bigger image for a grid
        attempts = [dict(img_size=128, embed_dim=WIDTH, depth=DEPTH, num_heads=HEADS), *attempts]
    return attempts


def _parameters_on_meta(name: str, kwargs: dict[str, Any]) -> int:
    """The parameter count of a build, without allocating it (a fallback must not build a 5B model)."""
    import timm

    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = timm.create_model(name, pretrained=False, **kwargs)
    return sum(p.numel() for p in model.parameters())


def _patch_of(model: nn.Module) -> tuple[int, int] | None:
    """The patch size the model states itself (timm patch_embed / embeds, HF config)."""
    for owner in (getattr(model, "patch_embed", None), getattr(model, "embeds", None)):
        size = getattr(owner, "patch_size", None)
        if size is not None:
            size = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
            backbone = getattr(owner, "backbone", None)  # hybrid: the backbone's stride times proj's
            if backbone is not None and hasattr(owner, "feature_ratio"):
                size = tuple(int(p) * int(r) for p, r in zip(size, owner.feature_ratio, strict=False))
            return size
    config = getattr(model, "config", None)
    size = getattr(config, "patch_size", None)
    if isinstance(size, (int, tuple, list)):
        return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    return None


def _input_size(model: nn.Module, kwargs: dict[str, Any]) -> tuple[int, int]:
    owner = getattr(model, "patch_embed", None)
    size = getattr(owner, "img_size", None)
    if size is not None:
        return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if "img_size" in kwargs:
        return kwargs["img_size"], kwargs["img_size"]
    cfg = getattr(model, "pretrained_cfg", None) or {}
    shape = cfg.get("input_size", (3, 224, 224))
    return int(shape[1]), int(shape[2])


def _signature(model: nn.Module) -> str:
    """Same classes, parameter shapes and scalar settings: the same tiny architecture."""
    shapes = tuple((n, tuple(p.shape)) for n, p in model.named_parameters())
    shapes += tuple((n, tuple(b.shape)) for n, b in model.named_buffers())
    scalars = []
    for module_name, module in model.named_modules():
        for key, value in vars(module).items():
            if not key.startswith("_") and isinstance(value, (bool, int, float, str, tuple)):
                scalars.append((module_name, key, repr(value)))
    config = getattr(model, "config", None)  # Hugging Face: settings live in the config
    settings = config.to_json_string() if hasattr(config, "to_json_string") else ""
    return repr((type(model).__name__, repr(model), shapes, tuple(sorted(scalars)), settings))


def _target_for(model: nn.Module, x: torch.Tensor, headless: bool) -> Any:
    if not headless:
        return None
    with torch.no_grad():
        out = output_tensor(call_model(model, x))
    return torch.randn(out.shape[1:], generator=torch.Generator().manual_seed(11)).to(out.dtype)


def _images(size: tuple[int, int], channels: int = 3) -> torch.Tensor:
    return torch.randn(2, channels, *size, generator=torch.Generator().manual_seed(7))


VARIANTS: dict[str, dict[str, Any]] = {  # --variants: each ViT architecture again, built another way
    "headless": dict(num_classes=0),  # an encoder (UNI, Virchow...): explained along a direction
    "dynamic": dict(dynamic_img_size=True),  # any input size: run on a non-square image
}


def build_timm(name: str, module: str, shrink: bool, variant: str = "") -> Built:
    import timm

    source = "timm-vit" if module in VIT_MODULES else "timm-other"
    cfg = timm.models.get_pretrained_cfg(name)
    extra = VARIANTS.get(variant, {})
    headless = (cfg is not None and cfg.num_classes == 0) or extra.get("num_classes") == 0
    classes = dict(num_classes=0) if headless else dict(num_classes=5)
    extra = {k: v for k, v in extra.items() if k != "num_classes"}
    label = f"{name}[{variant}]" if variant else name
    errors = []
    for kwargs in _timm_attempts(module) if shrink else [{}]:
        kwargs = {**kwargs, **extra}
        torch.manual_seed(0)
        try:
            count = _parameters_on_meta(name, {**classes, **kwargs})
            if count > (MAX_PARAMETERS if shrink else 3 * MAX_PARAMETERS):
                raise ValueError(f"{count / 1e6:.0f}M parameters, over the sweep's limit")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = timm.create_model(name, pretrained=False, **classes, **kwargs).eval()
            height, width = _input_size(model, kwargs)
            if variant == "dynamic":  # 16 px wider, as a user's image is: whole 8 or 16 px patches,
                width += 16  # not always a whole cell of a CNN stem's reduction (which must refuse)
            x = _images((height, width))
            target = _target_for(model, x, headless)  # the model's own forward must work
        except Exception as error:  # noqa: BLE001 - try the next, larger build
            errors.append(f"{kwargs}: {type(error).__name__}: {_first_line(error, 80)}")
            continue
        note = ("headless " if headless else "") + ",".join(f"{k}={v}" for k, v in kwargs.items())
        return Built(label, source, model, x, target, _patch_of(model), note)
    return Built(label, source, None, note="; ".join(errors[:1] + errors[-1:]))


def _first_line(error: BaseException, width: int) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:width] if lines else ""


def _smallest(names: list[str]) -> str:
    def rank(name: str) -> tuple[int, int, str]:
        hits = [i for i, word in enumerate(SIZE_WORDS) if word in name]
        return (min(hits) if hits else len(SIZE_WORDS), len(name), name)

    return min(names, key=rank)


def timm_models(only: list[str], others: bool, variants: bool = False) -> list[tuple[str, str, bool, str]]:
    """(name, module, shrink, variant): every ViT-module name (also as each of `VARIANTS` with
    ``variants``); one name per other module."""
    import timm
    from timm.models import _registry

    by_module: dict[str, list[str]] = {}
    for name in timm.list_models():
        by_module.setdefault(_registry._model_to_module[name], []).append(name)
    chosen = []
    for module, names in sorted(by_module.items()):
        if module in VIT_MODULES:
            kinds = ["", *VARIANTS] if variants else [""]
            chosen += [(name, module, True, kind) for name in names for kind in kinds]
        elif others:
            chosen.append((_smallest(names), module, False, ""))
    return [c for c in chosen if not only or any(o in c[0] for o in only)]


# -- Hugging Face ----------------------------------------------------------------------------------
HF_MODELS: list[tuple[str, str, dict[str, Any]]] = [
    ("ViTConfig", "ViTModel", {}),
    ("ViTConfig", "ViTForImageClassification", {}),
    ("DeiTConfig", "DeiTModel", {}),
    ("DeiTConfig", "DeiTForImageClassification", {}),
    ("DeiTConfig", "DeiTForImageClassificationWithTeacher", {}),
    ("BeitConfig", "BeitModel", {}),
    ("BeitConfig", "BeitModel", dict(use_mean_pooling=False)),
    ("BeitConfig", "BeitModel", dict(use_relative_position_bias=True, layer_scale_init_value=0.1)),
    ("BeitConfig", "BeitForImageClassification", {}),
    ("BeitConfig", "BeitForImageClassification", dict(use_mean_pooling=False)),
    ("Data2VecVisionConfig", "Data2VecVisionModel", {}),
    ("Data2VecVisionConfig", "Data2VecVisionForImageClassification", {}),
    ("Dinov2Config", "Dinov2Model", {}),
    ("Dinov2Config", "Dinov2Model", dict(use_swiglu_ffn=True)),
    ("Dinov2Config", "Dinov2ForImageClassification", {}),
    ("Dinov2WithRegistersConfig", "Dinov2WithRegistersModel", dict(num_register_tokens=4)),
    ("Dinov2WithRegistersConfig", "Dinov2WithRegistersForImageClassification", dict(num_register_tokens=4)),
    ("DINOv3ViTConfig", "DINOv3ViTModel", dict(num_register_tokens=2)),
    ("DINOv3ViTConfig", "DINOv3ViTModel", dict(num_register_tokens=2, use_gated_mlp=True, hidden_act="silu")),
    ("CLIPVisionConfig", "CLIPVisionModel", {}),
    ("CLIPVisionConfig", "CLIPVisionModelWithProjection", dict(projection_dim=16)),
    ("SiglipVisionConfig", "SiglipVisionModel", {}),
    ("SiglipVisionConfig", "SiglipVisionModel", dict(vision_use_head=False)),
    ("Siglip2VisionConfig", "Siglip2VisionModel", {}),
    ("ViTMAEConfig", "ViTMAEModel", {}),
    ("ViTMAEConfig", "ViTMAEModel", dict(mask_ratio=0.0)),
    ("ViTMSNConfig", "ViTMSNModel", {}),
    ("ViTMSNConfig", "ViTMSNForImageClassification", {}),
    ("IJepaConfig", "IJepaModel", {}),
    ("IJepaConfig", "IJepaForImageClassification", {}),
    ("ViTHybridConfig", "ViTHybridModel", {}),
    ("ViTHybridConfig", "ViTHybridForImageClassification", {}),
    ("SiglipConfig", "SiglipForImageClassification", {}),
    ("CLIPConfig", "CLIPForImageClassification", {}),
]
_TOWER_CONFIGS = {"SiglipConfig": "SiglipVisionConfig", "CLIPConfig": "CLIPVisionConfig"}


def build_hf(config_name: str, model_name: str, options: dict[str, Any], resized: bool = False) -> Built:
    import transformers

    settings = ",".join(f"{k}={v}" for k, v in options.items())
    label = f"hf:{model_name}" + (f"({settings})" if settings else "") + ("[resized]" if resized else "")
    sizes = dict(hidden_size=WIDTH, intermediate_size=2 * WIDTH, num_hidden_layers=DEPTH,
                 num_attention_heads=HEADS, image_size=SIZE, patch_size=PATCH)
    classifier = "ForImageClassification" in model_name
    try:
        torch.manual_seed(0)
        if config_name in _TOWER_CONFIGS:  # image-text pairs: a tiny tower and a tiny text model
            tower = getattr(transformers, _TOWER_CONFIGS[config_name])(**sizes).to_dict()
            text = dict(hidden_size=WIDTH, intermediate_size=2 * WIDTH, num_hidden_layers=1,
                        num_attention_heads=HEADS, vocab_size=64)
            config = getattr(transformers, config_name)(vision_config=tower, text_config=text, num_labels=5)
        else:
            if config_name == "ViTHybridConfig":
                sizes.update(image_size=64, patch_size=1)
            labels = dict(num_labels=5) if classifier else {}
            config = getattr(transformers, config_name)(**sizes, **options, **labels)
        model = getattr(transformers, model_name)(config).eval()
        size = getattr(getattr(config, "vision_config", config), "image_size", SIZE)
        size = (size, size) if isinstance(size, int) else tuple(size)
        if resized:  # another input size than the config's: positions interpolated, not square
            size = (size[0] + PATCH, size[1] + 2 * PATCH)
        x = _images(size)
        target = _target_for(model, x, headless=not classifier)
    except Exception as error:  # noqa: BLE001 - report the build failure as a skip
        return Built(label, "hf", None, note=f"{type(error).__name__}: {_first_line(error, 120)}")
    patch = _patch_of(getattr(model, "vision_model", model))
    if config_name == "ViTHybridConfig":  # the BiT backbone's stride times the patch
        patch = (16, 16)
    return Built(label, "hf", model, x, target, patch, "" if classifier else "headless")


# -- running ---------------------------------------------------------------------------------------
class SweepTimeoutError(Exception):
    pass


def _alarm(_signum: int, _frame: Any) -> None:
    raise SweepTimeoutError


def classify(built: Built, method: str, seconds: int) -> tuple[str, str]:
    """(class, detail) of one explain call."""
    x = built.images
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(seconds)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            maps = explain(built.model, x, method, target=built.target)
    except SweepTimeoutError:
        return "crash", f"timeout after {seconds} s"
    except AttnmapError as error:
        message = str(error)
        if "\n" in message.strip():
            lines = message.count("\n") + 1
            return "crash", f"{type(error).__name__} over {lines} lines: {message[:200]!r}"
        return "refused", f"{type(error).__name__}: {message}"
    except Exception as error:  # noqa: BLE001 - the point of the sweep
        frame = traceback.extract_tb(error.__traceback__)[-1]
        where = f"{frame.filename.split('site-packages/')[-1].split('src/')[-1]}:{frame.lineno}"
        return "crash", f"{type(error).__name__}: {_first_line(error, 160)} ({where})"
    finally:
        signal.alarm(0)
    return check_maps(built, method, maps, caught)


def check_maps(built: Built, method: str, maps: torch.Tensor, caught: list[Any]) -> tuple[str, str]:
    x = built.images
    height, width = x.shape[-2:]
    if get_method(method).output == "pixels":
        grid = (height, width)
    elif built.patch is not None:  # floor, or ceil for a model padding to whole patches
        stems = (getattr(built.model, "patch_embed", None), getattr(built.model, "embeds", None))
        if any(getattr(stem, "dynamic_img_pad", False) for stem in stems):
            grid = (-(-height // built.patch[0]), -(-width // built.patch[1]))
        else:
            grid = (height // built.patch[0], width // built.patch[1])
    else:
        grid = None
    if not isinstance(maps, torch.Tensor) or maps.ndim != 3 or maps.shape[0] != x.shape[0]:
        shape = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        return "bad", f"shape {shape}"
    if grid is not None and tuple(maps.shape[1:]) != grid:
        return "bad", f"grid {tuple(maps.shape[1:])}, the model's is {grid}"
    if not torch.isfinite(maps).all():
        return "bad", "NaN or inf"
    flat = maps.detach().reshape(maps.shape[0], -1).double()
    spread = flat.amax(1) - flat.amin(1)
    scale = flat.abs().amax(1)
    constant = spread <= 8 * torch.finfo(maps.dtype).eps * scale
    warned = sum(issubclass(w.category, FlatMapWarning) for w in caught)
    if bool(constant.any()):
        if warned >= int(constant.sum()):
            return "ok-flat", f"{int(constant.sum())} flat, warned"
        return "bad", "constant map, no FlatMapWarning"
    if torch.allclose(flat[0], flat[1], rtol=1e-6, atol=0):
        return "bad", "the same map for two different images"
    with warnings.catch_warnings():  # each image's map must not depend on the others in the batch
        warnings.simplefilter("ignore")
        alone = explain(built.model, x[1:], method, target=built.target)
    error = float((alone[0] - maps[1]).abs().max()) / max(float(maps[1].abs().max()), 1e-30)
    if error > BATCH_TOLERANCE[maps.dtype]:
        return "bad", f"image 1 alone differs from its map in the batch by {error:.2g} (relative)"
    return "ok", "" if grid is not None else "grid not checked"


def readout_agreement(built: Built) -> str:
    """Whether the attention methods and the LRP methods start from the same token rows (the capture's
    query against the LRP read-out), in float64: "same", "differ: ...", or "n/a" (one side refused)."""
    import copy

    from attnmap.vit.capture import capture
    from attnmap.vit.lrp.methods import _readout_rows
    from attnmap.vit.lrp.readers import build_twin

    model, x = copy.deepcopy(built.model).double(), built.images.double()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            twin = build_twin(model)
            trace = twin.forward(x, record_from=0, grad_from=None, record_stem=False)
            query = capture(model, x).query
            rows = _readout_rows(twin, query, trace)
    except Exception:  # noqa: BLE001 - either side refusing the model is counted by the methods
        return "n/a"
    if rows.shape == query.shape and torch.allclose(rows, query, rtol=0, atol=1e-12):
        return "same"
    return f"differ: attention rows {query[0, :4].tolist()}..., LRP rows {rows[0, :4].tolist()}..."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated substrings of the names to run")
    parser.add_argument("--no-others", action="store_true", help="skip the non-ViT timm modules")
    parser.add_argument("--no-hf", action="store_true", help="skip the Hugging Face models")
    parser.add_argument("--no-timm", action="store_true", help="skip timm")
    parser.add_argument(
        "--variants",
        action="store_true",
        help="also each timm ViT headless and with dynamic_img_size, each HF model on another input size",
    )
    parser.add_argument("--timeout", type=int, default=60, help="seconds per (model, method)")
    parser.add_argument("--width", type=int, default=200, help="characters of each message shown")
    parser.add_argument("--quiet", action="store_true", help="print only rows that are not ok")
    args = parser.parse_args(argv)
    only = [o for o in args.only.split(",") if o]
    torch.set_num_threads(1)
    start = time.perf_counter()
    names = sorted(methods())
    counts: dict[str, Counter[str]] = {}
    readouts: Counter[str] = Counter()
    seen: dict[str, Built] = {}
    print("| model | method | class | detail |\n|---|---|---|---|")

    def report(built: Built) -> None:
        tally = counts.setdefault(built.source, Counter())
        if built.model is None:
            tally["skip"] += len(names)
            print(f"| {built.name} | * | skip | the model's own build/forward failed: {built.note} |")
            return
        agreement = readout_agreement(built)
        readouts[agreement.split(":")[0]] += 1
        if agreement.startswith("differ"):
            print(f"| {built.name} | (read-out rows) | bad | {agreement[: args.width]} |", flush=True)
        for method in names:
            kind, detail = classify(built, method, args.timeout)
            tally[kind] += 1
            if not args.quiet or kind not in ("ok", "ok-flat"):
                detail = detail.replace("|", "/")[: args.width]
                print(f"| {built.name} | {method} | {kind} | {detail} |", flush=True)

    builders: list[Callable[[], Built]] = []
    if not args.no_timm:
        for name, module, shrink, kind in timm_models(only, not args.no_others, args.variants):
            builders.append(lambda n=name, m=module, s=shrink, k=kind: build_timm(n, m, s, k))
    if not args.no_hf:
        for config_name, model_name, options in HF_MODELS:
            if not only or any(o in "hf:" + model_name for o in only):
                for resized in (False, True) if args.variants else (False,):
                    build = functools.partial(build_hf, config_name, model_name, options, resized)
                    builders.append(build)
    for build in builders:
        built = build()
        if built.model is not None:
            key = built.source + _signature(built.model) + repr((built.target is None, built.images.shape))
            if key in seen:
                seen[key].aliases.append(built.name)
                continue
            seen[key] = built
        report(built)
        built.model = None  # free it: only the signature is kept
    print()
    for built in seen.values():
        if built.aliases:
            print(f"same tiny architecture as {built.name}: {', '.join(built.aliases)}")
    print(f"\n{len(seen)} distinct architectures run; {time.perf_counter() - start:.0f} s")
    total: Counter[str] = Counter()
    kinds = ("ok", "ok-flat", "refused", "crash", "bad", "skip")
    print("| source | " + " | ".join(kinds) + " |\n|---|" + "---|" * len(kinds))
    for source, tally in counts.items():
        total.update(tally)
        print(f"| {source} | " + " | ".join(str(tally[k]) for k in kinds) + " |")
    print("| all | " + " | ".join(str(total[k]) for k in kinds) + " |")
    print(
        f"\nread-out rows of the attention and the LRP methods (per architecture): same {readouts['same']}, "
        f"differ {readouts['differ']}, n/a (LRP or capture refused) {readouts['n/a']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
