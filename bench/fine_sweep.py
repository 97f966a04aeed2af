"""The slide-to-pixels chain (fine maps) over the patch encoders pathologists run: does it hold up?

Run (a minute or two on a 2-core CPU; nothing downloaded, tiny seeded models)::

    PYTHONPATH=src nice python bench/fine_sweep.py                 # everything
    PYTHONPATH=src nice python bench/fine_sweep.py --only virchow,hf   # labels containing these
    PYTHONPATH=src nice python bench/fine_sweep.py --verbose       # one line per case

Encoders: `bench/fine_sweep_encoders.py` (UNI, UNI2, Virchow, Virchow2, H-optimus, GigaPath, Lunit
DINO, CLIP / CONCH / SigLIP / EVA / Swin timm models, Phikon, Phikon-v2, Midnight, Hibou, CLIP and
DINOv3 Hugging Face folders, the CNN presets, TorchScript), each loaded by `load_encoder` as the
slide pipeline does and run in float64 with non-trivial biases. For each encoder × MIL head (ABMIL,
CLAM_SB, CLAM_MB, 3 classes) × fine method × MIL method × target (the predicted class, another
class) a bag of 6 patches goes through `bag_fine_maps` and is classified:

- ``ok``: finite maps of the encoder's input size, the class asked for, and every identity below;
- ``refused``: an `attnmap.errors.AttnmapError` in one line (shown), raised by the check the
  pipeline runs before any slide (`check_fine_encoder`) or by the maps themselves;
- ``crash``: any other exception, or an attnmap error spanning lines;
- ``wrong``: an identity broken (named): ``conservation`` (each patch's map sums to its MIL patch
  score x_i · d_i, which makes the encoder's read-out the one explained for ``lrp``), ``batch``
  (a patch's map in the bag equals its map alone), ``slide`` (the same patch in a second slide, the
  bag in another order, gets the same map), ``readout`` (the map is, up to its scale, what
  `attnmap.explain` gives on the encoder alone, as a token model, with a `ReadoutDirection` of the
  read-out its features are);
- ``skip``: the encoder does not load (the pipeline itself refuses it: not the fine maps' doing).

``--float32`` runs the same in the pipeline's precision with a relative tolerance of 1e-3 instead of
1e-7: transformer attribution's clamp and LRP's divisions turn float32 round-off (matrix products
blocked differently for another batch size, two implementations of one network) into relative
differences up to ~4e-4; a wrong read-out or a broken identity is O(1).

One row more per encoder, ``identity``: on a bias-free float64 copy (biases, class / register tokens
and position embeddings zeroed) the ``lrp`` relevance has no bias share and sums to d · f(p); for a
piecewise-linear (ReLU) encoder it also equals gradient × input.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fine_sweep_checks  # noqa: E402
from fine_sweep_checks import bias_free_identity, case_checks  # noqa: E402
from fine_sweep_encoders import EncoderCase, hf_cases, timm_cases, torchscript_case  # noqa: E402

from attnmap.errors import AttnmapError  # noqa: E402

N_PATCHES = 6


DTYPE = torch.float64


def _heads(dim: int) -> dict[str, torch.nn.Module]:
    from attnmap.mil.abmil import ABMIL
    from attnmap.mil.clam import CLAM_MB, CLAM_SB

    torch.manual_seed(0)
    heads = {
        "ABMIL": ABMIL(embed_dim=dim, hidden_dim=32, attention_dim=16, n_classes=3),
        "CLAM_SB": CLAM_SB(embed_dim=dim, n_classes=3),
        "CLAM_MB": CLAM_MB(embed_dim=dim, n_classes=3),
    }
    for head in heads.values():
        _roughen(head)
    return {name: head.to(DTYPE).eval() for name, head in heads.items()}


def _roughen(model: torch.nn.Module) -> None:
    """Seeded non-trivial biases and LayerScale factors (timm and HF start them at 0 and 1e-5), so
    the bias share and every block take part."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "bias" or leaf in ("cls_token", "reg_token", "register_tokens", "class_embedding"):
                parameter.add_(torch.randn(parameter.shape, generator=generator).to(parameter) * 0.1)
            elif leaf in ("gamma", "gamma_1", "gamma_2", "lambda1"):
                parameter.copy_(torch.rand(parameter.shape, generator=generator).to(parameter) * 0.5 + 0.1)


def _one_line(error: BaseException) -> tuple[str, str]:
    text = str(error).strip()
    if isinstance(error, AttnmapError) and text and "\n" not in text:
        return "refused", text
    return "crash", f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


def run_encoder(case: EncoderCase, verbose: bool) -> list[tuple[str, str, str]]:
    """(case name, class, detail) rows of one encoder."""
    from attnmap.wsi.encoders import load_encoder
    from attnmap.wsi.heatmap.encoder_support import check_fine_encoder
    from attnmap.wsi.heatmap.fine import FINE_METHODS, MIL_METHODS, transform_bounds

    try:
        encoder = load_encoder(case.name, input_size=case.input_size, model_args=case.args or None, seed=0)
    except Exception as error:  # noqa: BLE001 - the pipeline's own refusal: reported as skip
        return [("load", "skip", _one_line(error)[1])]
    model = encoder.model
    _roughen(model)
    model = model.to(DTYPE)
    if hasattr(model, "fine_twin"):
        model.__dict__["_fine_twin"] = None  # the twin of the roughened weights
    size = int(encoder.transform.size)
    rng = np.random.default_rng(0)
    patches = rng.integers(0, 256, size=(N_PATCHES, size, size, 3), dtype=np.uint8)
    inputs = torch.stack([encoder.transform(p) for p in patches]).to(DTYPE)
    with torch.no_grad():
        features = model(inputs)
    bounds = transform_bounds(encoder.transform)
    try:
        check_fine_encoder(model)  # what the pipeline checks before any slide
        refusal = None
    except Exception as error:  # noqa: BLE001
        refusal = _one_line(error)
    rows: list[tuple[str, str, str]] = []
    if refusal is None:
        try:
            rows.append(("identity", *bias_free_identity(model, inputs, features, bounds)))
        except Exception as error:  # noqa: BLE001 - classified, never propagated
            rows.append(("identity", *_one_line(error)))
    reference = case.reference(model) if case.reference is not None else None
    for head_name, head in _heads(features.shape[1]).items():
        with torch.no_grad():
            predicted = int(head(features).logits.argmax(dim=1)[0])
        for mil_method in MIL_METHODS:
            for method in FINE_METHODS:
                for target in (predicted, (predicted + 1) % 3):
                    name = f"{head_name}/{mil_method}/{method}/{'pred' if target == predicted else 'other'}"
                    if refusal is not None:
                        rows.append((name, *refusal))
                        continue
                    try:
                        failures = case_checks(
                            model, inputs, features, head, method, mil_method, target, bounds, reference
                        )
                    except Exception as error:  # noqa: BLE001 - classified, never propagated
                        rows.append((name, *_one_line(error)))
                        continue
                    rows.append((name, "wrong" if failures else "ok", "; ".join(failures)))
    if verbose:
        for name, kind, detail in rows:
            print(f"  {case.label:40s} {name:42s} {kind:8s} {detail}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated parts of encoder labels to run")
    parser.add_argument("--verbose", action="store_true", help="one line per case")
    parser.add_argument("--float32", action="store_true", help="run in float32 (the pipeline's precision)")
    args = parser.parse_args(argv)
    global DTYPE
    if args.float32:  # identities to float32 round-off through a few layers
        DTYPE, fine_sweep_checks.TOLERANCE = torch.float32, 1e-3
    torch.set_num_threads(1)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    tolerance = fine_sweep_checks.TOLERANCE
    print(f"fine sweep, torch {torch.__version__}, {DTYPE}, tolerance {tolerance:g}; uptime: {uptime}")
    wanted = [part.strip().lower() for part in args.only.split(",") if part.strip()]
    totals: collections.Counter[str] = collections.Counter()
    notes: dict[tuple[str, str], set[str]] = collections.defaultdict(set)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        cases = timm_cases() + hf_cases(Path(root)) + [torchscript_case(Path(root))]
        print(f"{'encoder':40s} {'ok':>4s} {'refused':>8s} {'crash':>6s} {'wrong':>6s} {'skip':>5s}")
        for case in cases:
            if wanted and not any(part in case.label.lower() for part in wanted):
                continue
            rows = run_encoder(case, args.verbose)
            counts = collections.Counter(kind for _, kind, _ in rows)
            totals.update(counts)
            for name, kind, detail in rows:
                if kind != "ok":
                    notes[(case.label, kind)].add(detail if name != "identity" else f"identity: {detail}")
            print(
                f"{case.label:40s} {counts['ok']:4d} {counts['refused']:8d} {counts['crash']:6d} "
                f"{counts['wrong']:6d} {counts['skip']:5d}",
                flush=True,
            )
    print(
        f"{'TOTAL':40s} {totals['ok']:4d} {totals['refused']:8d} {totals['crash']:6d} "
        f"{totals['wrong']:6d} {totals['skip']:5d}   ({time.perf_counter() - start:.0f} s)"
    )
    for (label, kind), details in sorted(notes.items()):
        for detail in sorted(details)[:4]:
            print(f"  {kind:8s} {label}: {detail[:300]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
