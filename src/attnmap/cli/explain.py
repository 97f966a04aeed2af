"""``attnmap explain`` and ``attnmap methods``: heatmaps for image files from the command line.

Thin: parsing and messages only; the work is `attnmap.vit.batch.explain_paths` (in process) or
`attnmap.vit.batch.explain_chunk` on dask workers via `attnmap.parallel.run_tasks`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from attnmap.cli.options import device_option, out_option, parse_options, quiet, resolved_device
from attnmap.errors import InputError
from attnmap.readout_names import TOKEN_READOUTS  # not attnmap.vit's: that package imports torch, timm

if TYPE_CHECKING:
    import torch


def default_method() -> str:
    """The method `attnmap.explain` uses when none is named: the CLI's default is the API's."""
    import inspect

    from attnmap.vit.explain import explain as explain_api

    return inspect.signature(explain_api).parameters["method"].default


def load_direction(path: Path) -> torch.Tensor:
    """A direction target from a ``.npy`` or ``.pt`` file: a finite float64 tensor, (D,) or (N, D)."""
    import numpy as np
    import torch

    if not path.is_file():
        raise InputError(f"--direction file not found: {path}")
    try:
        if path.suffix.lower() == ".npy":
            value = torch.from_numpy(np.load(path, allow_pickle=False))
        elif path.suffix.lower() in (".pt", ".pth"):
            value = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise InputError(f"--direction {path}: expected a .npy or .pt file")
    except (OSError, ValueError, RuntimeError) as error:
        raise InputError(f"cannot read --direction {path}: {error}") from None
    if not isinstance(value, torch.Tensor) or value.ndim not in (1, 2) or not value.numel():
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise InputError(f"--direction {path} must hold a (D,) or (N, D) array, got {shape}")
    if value.dtype == torch.bool or value.is_complex():
        raise InputError(f"--direction {path} must hold real numbers, got {value.dtype}")
    value = value.to(torch.float64)
    if not torch.isfinite(value).all():
        raise InputError(f"--direction {path} contains NaN or infinite values")
    return value


@click.command("explain")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--model",
    "model_spec",
    required=True,
    help="timm:NAME, hf:LOCAL_DIR or bundled: attnmap:shapes-vit, attnmap:patch-vit (headless: --direction).",
)
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None, help="Weights to load.")
@click.option(
    "--model-arg",
    "model_args",
    multiple=True,
    metavar="KEY=VALUE",
    help="Extra timm.create_model argument (repeatable), e.g. depth=4.",
)
@click.option(
    "--method",
    default=None,
    help="A method name, several comma-separated, or 'all' (every method that can run on this model "
    "and target, one comparison grid per image; each one left out is named with its reason); "
    "default: attnmap.explain's.",
)
@click.option(
    "--target",
    default=None,
    help="Class index, or class name where the model names its classes (timm label_names, Hugging Face "
    "id2label); default: each image's prediction.",
)
@click.option(
    "--direction",
    "direction_file",
    type=click.Path(path_type=Path),
    default=None,
    help="For headless models (an embedding or tokens out): a .npy or .pt file holding a direction in "
    "the output space, (D,) or one row per image; the score explained is <output, direction>.",
)
@click.option(
    "--readout",
    type=click.Choice(TOKEN_READOUTS),
    default=None,
    help="With --direction, for models whose output is tokens (timm global_pool='', a Hugging Face "
    "model's last_hidden_state): the embedding the direction lives in (class token, patch-token mean, "
    "or both concatenated as Virchow's); the score explained is <readout(tokens), direction>.",
)
@out_option("Output folder.")
@device_option()
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Images per forward pass (with --workers: per task).")
@click.option("--cmap", default=None, help="Colour map (default: jet; signed maps RdBu_r centred on 0).")
@click.option("--on", "on", type=click.Choice(["crop", "original"]), default="crop", show_default=True,
              help="Draw on the model's crop or on the original image (crop framed).")
@click.option("--alpha", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True)
@click.option("--legend/--no-legend", default=True, show_default=True,
              help="Title (image, prediction, method) and colour bar around each overlay PNG.")
@click.option(
    "--option",
    "option_pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="Method option (repeatable), e.g. start_layer=1, head_fusion=max.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Dask worker processes (0: run in this process).",
)
@click.option("--scheduler", default=None, help="Address of a running dask scheduler to use.")
def explain(
    images: tuple[Path, ...],
    model_spec: str,
    checkpoint: Path | None,
    model_args: tuple[str, ...],
    method: str | None,
    target: str | None,
    direction_file: Path | None,
    readout: str | None,
    out_dir: Path,
    device: str,
    batch_size: int,
    cmap: str | None,
    on: str,
    alpha: float,
    legend: bool,
    option_pairs: tuple[str, ...],
    workers: int,
    scheduler: str | None,
) -> None:
    """Explain IMAGES (files, or folders of PNG/JPEG/TIFF/WebP/BMP/GIF) with a ViT; write overlays, maps."""
    from attnmap.class_lookup import target_text
    from attnmap.render.colormap import get_cmap
    from attnmap.vit.image_files import expand_image_paths
    from attnmap.vit.method_choice import resolve_methods, split_options
    from attnmap.vit.readout import ReadoutDirection
    from attnmap.vit.timm_build import check_timm_name

    method = method if method is not None else default_method()  # '' is no method: refused below
    if target is not None:
        target = target_text(target)  # an index, or a class name looked up in the model
    if direction_file is not None:
        if target is not None:
            raise InputError("give either --target (a class) or --direction (a file), not both")
        target = load_direction(direction_file)
        if readout is not None:
            target = ReadoutDirection(readout, target)
    elif readout is not None:
        raise InputError("--readout names the embedding a --direction lives in: give --direction too")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir} is an existing file; give a folder")
    paths = expand_image_paths(images, out_dir)
    rows = getattr(target, "direction", target)  # a ReadoutDirection's direction, or the tensor itself
    if direction_file is not None and rows.ndim == 2 and rows.shape[0] not in (1, len(paths)):
        raise InputError(
            f"--direction {direction_file} holds {rows.shape[0]} rows for {len(paths)} images: give one row, "
            "or one per image in their order (a file named twice is explained once)"
        )
    names, _ = resolve_methods(method)
    options = parse_options(option_pairs)
    split_options(names, options)  # fail on a misspelt option before loading anything
    if cmap is not None:
        get_cmap(cmap)
    model_kwargs = parse_options(model_args, "--model-arg")
    if scheduler is not None:
        from attnmap.wsi.pipeline.config_values import check_scheduler

        check_scheduler(scheduler)
    if checkpoint is None and model_spec.startswith("timm:") and not Path(model_spec[5:]).is_dir():
        check_timm_name(model_spec[len("timm:") :])  # before warning about its weights
        click.echo(
            f"attnmap: warning: {model_spec} has random weights (no --checkpoint given); "
            "its maps show an untrained network",
            err=True,
        )
    settings = {"batch_size": batch_size, "cmap": cmap, "alpha": alpha, "on": on, "legend": legend, **options}
    if workers or scheduler:
        _run_distributed(
            paths, model_spec, checkpoint, model_kwargs, method, target, out_dir, workers, scheduler, settings
        )
        note = None if checkpoint is None else normalisation_note(model_spec, model_kwargs)
        if note:  # after the work: a run that fails says only why
            click.echo(note, err=True)
        return
    from attnmap.architecture_hints import argument_form
    from attnmap.checkpoint import cached_vit
    from attnmap.lock import folder_lock
    from attnmap.vit.batch import explain_paths

    weights = None if checkpoint is None else str(checkpoint)
    with argument_form("--model-arg"):  # a checkpoint that does not fit: the arguments it needs, as options
        model = cached_vit(model_spec, weights, tuple(sorted(model_kwargs.items())))
    model = model.to(resolved_device(device))
    with folder_lock(out_dir, "attnmap explain"):  # one run per folder; a rerun skips finished images
        written = explain_paths(
            paths, model, method, target, out_dir, model_name=model_spec, progress=not quiet(), **settings
        )
    note = None if checkpoint is None else normalisation_note(model_spec, model_kwargs, model)
    if note:
        click.echo(note, err=True)
    fresh, reused = written.file_counts()
    kept = f"; kept {reused} made by an earlier run with the same settings" if reused else ""
    click.echo(f"wrote {fresh} files to {out_dir}{kept}")


def normalisation_note(
    model_spec: str, model_kwargs: dict[str, object], model: torch.nn.Module | None = None
) -> str | None:
    """The note for a timm architecture whose weights come from ``--checkpoint``: which mean and std
    the images get. A weights file carries no preprocessing, so the architecture's timm default
    applies, and a network fine-tuned with another (ImageNet's under a 0.5 default) would be explained
    on inputs it never saw. None for a timm folder or Hugging Face model (their configs say), or when
    ``--model-arg pretrained_cfg_overlay=...`` gives mean and std. ``model``: the model loaded for
    the run, when this process holds it (else its configuration is built on the meta device)."""
    overlay = model_kwargs.get("pretrained_cfg_overlay")
    if not model_spec.startswith("timm:") or Path(model_spec[5:]).is_dir():
        return None
    if isinstance(overlay, dict) and {"mean", "std"} <= overlay.keys():
        return None
    from attnmap.vit.preprocess import data_config

    if model is None:
        import timm
        import torch

        try:  # on the meta device: the configuration alone, no memory for the weights
            with torch.device("meta"):
                model = timm.create_model(model_spec[5:], pretrained=False, **model_kwargs)
        except Exception:  # noqa: BLE001 - loading the model says what is wrong with the arguments
            return None
    config = data_config(model)

    def spelled(values: object) -> str:
        return "(" + ", ".join(f"{value:g}" for value in values) + ")"  # type: ignore[union-attr]

    return (
        f"attnmap: note: {model_spec} with --checkpoint: images are normalised with the architecture's "
        f"default, mean {spelled(config['mean'])}, std {spelled(config['std'])}; if the weights were "
        "trained with others, pass --model-arg \"pretrained_cfg_overlay={'mean': (...), 'std': (...)}\""
    )


def _run_distributed(
    paths: list[Path],
    model_spec: str,
    checkpoint: Path | None,
    model_kwargs: dict[str, object],
    method: str,
    target: int | torch.Tensor | None,
    out_dir: Path,
    workers: int,
    scheduler: str | None,
    settings: dict[str, object],
) -> None:
    import functools

    try:
        from attnmap.parallel import run_tasks
    except ImportError as error:
        raise InputError(
            f"--workers/--scheduler need attnmap.parallel, which is not available: {error}"
        ) from None
    from attnmap.vit.batch import explain_chunk
    from attnmap.vit.explain_outputs import claim_stems
    from attnmap.vit.method_choice import resolve_methods

    batch_size = int(settings["batch_size"])
    # each image's index travels with it, so that a direction per image reaches its own chunk
    stems = claim_stems(out_dir, paths, resolve_methods(method)[0])  # once: the chunks' names
    named = [(str(path), stems[index], index) for index, path in enumerate(paths)]
    chunks = [named[i : i + batch_size] for i in range(0, len(named), batch_size)]  # names unique overall
    from attnmap.architecture_hints import call_in_argument_form

    task = functools.partial(
        call_in_argument_form,
        "--model-arg",  # a checkpoint that does not fit, in a worker: the hint as options too
        explain_chunk,
        model_spec=model_spec,
        checkpoint=None if checkpoint is None else str(checkpoint),
        model_kwargs=tuple(sorted(model_kwargs.items())),
        method=method,
        target=target,
        out_dir=str(out_dir),
        n_images=len(paths),
        **settings,
    )
    from attnmap.lock import folder_lock

    with folder_lock(out_dir, "attnmap explain"):
        report = run_tasks(
            task,
            chunks,
            workers=max(workers, 1),
            scheduler=scheduler,
            report=out_dir / "run_report.json",
            desc="image batches",
            progress=not quiet(),
        )
    from attnmap.vit.task_warnings import say_once

    say_once(said for item in report.done for said in (item.result or {}).get("warnings", ()))
    click.echo(
        f"{len(report.done)} batches done, {len(report.failed)} failed; report: {out_dir / 'run_report.json'}"
    )
    if report.failed:
        first = report.failed[0]
        raise InputError(f"{len(report.failed)} batches failed, first: {first.error_type}: {first.message}")


@click.command("methods")
def list_methods() -> None:
    """List the explanation methods with their options."""
    from attnmap.vit.registry import get_method, methods

    for name, description in methods().items():
        options = get_method(name).options()
        shown = ", ".join(f"{key}={value!r}" for key, value in options.items())
        click.echo(f"{name:26s} {description}" + (f" [options: {shown}]" if shown else ""))

