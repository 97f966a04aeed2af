"""``attnmap evaluate`` (faithfulness and localisation on data with ground truth) and
``attnmap train-shapes`` (the command that made the bundled shapes ViT)."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from attnmap.cli.options import device_option, out_option, quiet, resolved_device
from attnmap.errors import InputError

DEFAULT_EVAL_SEED = 1  # the bundled model trained on seed 0's stream; seed 1 is a different stream
MAX_SEED = 2**43  # 64-bit seeds; the random baseline spaces its maps' seeds 1,000,003 apart


@click.command()
@click.option("--model", "model_spec", default="attnmap:shapes-vit", show_default=True,
              help="attnmap:shapes-vit, timm:NAME or hf:LOCAL_DIR.")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Weights to load into the model (state_dict or .safetensors).")
@click.option("--data", type=click.Choice(["shapes"]), default="shapes", show_default=True,
              help="Labelled images with object masks (attnmap.data.shapes).")
@click.option("--n", "n_images", type=click.IntRange(min=1), default=200, show_default=True,
              help="Number of images.")
@click.option("--methods", "method_list", default="all", show_default=True,
              help="'all' or comma-separated names: for images those of `attnmap methods`; with "
                   "--mil-checkpoint attention, gradient_x_input, integrated_gradients, lrp, occlusion; "
                   "with --run the run's score sets.")
@out_option("Folder for the CSV and plot.", default=Path("attnmap_evaluation"))
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=DEFAULT_EVAL_SEED, show_default=True,
              help="Seed of the images and of the random baseline.")
@click.option("--batch-size", type=click.IntRange(min=1), default=50, show_default=True,
              help="Images per forward pass (memory, not results).")
@click.option("--pointing-tolerance", type=click.IntRange(min=0), default=4, show_default=True,
              help="Pixels by which the mask is grown for the pointing game.")
@click.option("--markdown", is_flag=True, help="Print the table as Markdown.")
# a folder gets `refuse_run_folder` / load_mil's message naming the checkpoint inside, not click's
# bare "is a directory"
@click.option("--mil-checkpoint", type=click.Path(exists=True, path_type=Path), default=None,
              help="Slides: a CLAM / ABMIL checkpoint; runs patch flipping on --bags instead of images.")
@click.option("--bags", "bag_paths", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Slides: feature bags (h5 / .pt files or folders); repeat for several.")
@click.option("--run", "run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Slides: a `wsi run` output folder scored against --annotations (patch AUC, FROC).")
@click.option("--annotations", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Slides: folder of <slide id>.geojson|.xml (QuPath GeoJSON / ASAP XML) ground truth.")
@device_option()
def evaluate(
    model_spec: str,
    checkpoint: Path | None,
    data: str,
    n_images: int,
    method_list: str,
    out_dir: Path,
    seed: int,
    batch_size: int,
    pointing_tolerance: int,
    markdown: bool,
    mil_checkpoint: Path | None,
    bag_paths: tuple[Path, ...],
    run_dir: Path | None,
    annotations: Path | None,
    device: str,
) -> None:
    """Score relevance maps against ground truth: perturbation AUCs, segmentation and pointing game.

    Every method gets a row, and a seeded random-map baseline is always reported. Writes
    OUT/evaluation.csv (+ .json sidecar with provenance and curves) and OUT/perturbation_curves.png,
    deleting an earlier evaluation's before it starts.

    With --mil-checkpoint and --bags: patch flipping of MIL relevance methods on slides (no labels
    needed), against a seeded random order; writes OUT/patch_flipping.csv (+ .json with curves),
    deleting an earlier evaluation's before it starts.

    With --run and --annotations: each score set of a `wsi run` folder against annotated lesions
    (patch AUC per slide, FROC); writes OUT/lesions_<method>.json (replacing every earlier one in OUT).
    """
    _refuse_other_modes(run_dir is not None or annotations is not None,
                        mil_checkpoint is not None or bool(bag_paths))
    if run_dir is not None or annotations is not None:
        _evaluate_annotated(run_dir, annotations, method_list, out_dir)
        return
    if mil_checkpoint is not None or bag_paths:
        _evaluate_slides(mil_checkpoint, bag_paths, method_list, out_dir, seed, markdown, quiet(), device)
        return
    import torch

    from attnmap.data.shapes import ShapesDataset
    from attnmap.evaluate.report import format_table, plot_curves, write_csv
    from attnmap.evaluate.runner import check_memory, evaluate_methods
    from attnmap.provenance import provenance
    from attnmap.vit.models import load_model
    from attnmap.vit.preprocess import data_config
    from attnmap.vit.registry import methods as registered_methods

    names = _method_names(method_list, list(registered_methods()), "unknown method(s)", "available")
    torch.manual_seed(seed)
    model = load_model(model_spec, checkpoint=checkpoint).to(resolved_device(device))
    config = data_config(model)
    _, height, width = config["input_size"]
    if height != width:
        raise InputError(f"--data shapes makes square images; the model expects {height}x{width}")
    check_memory(n_images, height, width)
    dataset = ShapesDataset(n_images, size=height, seed=seed, mean=config["mean"], std=config["std"])
    command = _command_line(model_spec, checkpoint, data, n_images, method_list, out_dir, seed, batch_size,
                            pointing_tolerance)
    record = provenance(
        method=",".join(names),
        parameters={"data": data, "n": n_images, "seed": seed, "batch_size": batch_size,
                    "pointing_tolerance": pointing_tolerance, "image_size": height},
        model=model,
        model_name=model_spec,
        command=command,
    )
    result = evaluate_methods(model, dataset, names, batch_size=batch_size, seed=seed,
                              pointing_tolerance=pointing_tolerance, progress=not quiet(),
                              before_work=lambda: _remove_earlier_outputs(out_dir, IMAGE_OUTPUTS))
    csv_path = write_csv(result, out_dir / IMAGE_OUTPUTS[0], record)
    plot_path = plot_curves(result, out_dir / IMAGE_OUTPUTS[2], record)
    click.echo(f"{command}\n{n_images} images, clean accuracy {result.settings['clean_accuracy']:.1f}%; "
               "AUCs over x = 0..90% removed (x 100), other metrics in %")
    click.echo(format_table(result, markdown=markdown))
    click.echo(f"wrote {csv_path} (+ {csv_path.with_suffix('.json').name}) and {plot_path}")


@click.command("train-shapes")
@out_option("Folder for shapes_vit.safetensors and its JSON record (never the installed package).",
            default=Path("shapes-vit"))
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Default: the bundled recipe's.")
@click.option("--n-train", type=click.IntRange(min=1), default=None, help="Default: the bundled recipe's.")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True,
              help="CPU threads for torch (1 is faster on a machine busy with other work).")
@device_option(default="cpu", help_text="cpu (the bundled weights' device), auto, cuda or cuda:N.")
def train_shapes(
    out_dir: Path, seed: int, epochs: int | None, n_train: int | None, threads: int, device: str
) -> None:
    """Train the shapes ViT on the CPU and save weights plus a JSON record of how they were made."""
    from attnmap.data.shapes_model import WEIGHTS_PATH
    from attnmap.data.train_shapes import RECIPE, train_shapes_vit

    epochs = epochs if epochs is not None else RECIPE["epochs"]
    n_train = n_train if n_train is not None else RECIPE["n_train"]
    command = f"attnmap train-shapes --out {out_dir} --seed {seed} --epochs {epochs} --n-train {n_train}"
    command += f" --threads {threads}" + (f" --device {device}" if device != "cpu" else "")
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = out_dir / WEIGHTS_PATH.name
    record = train_shapes_vit(out_path, seed=seed, epochs=epochs, n_train=n_train, threads=threads,
                              command=command, progress=not quiet(), device=resolved_device(device))
    click.echo(f"wrote {out_path} and {Path(out_path).with_suffix('.json')}: held-out accuracy "
               f"{record['held_out']['accuracy']:.4f}, {record['train_wall_seconds']:.0f} s")


def _evaluate_slides(checkpoint: Path | None, bag_paths: tuple[Path, ...], method_list: str, out_dir: Path,
                     seed: int, markdown: bool, quiet: bool, device: str = "cpu") -> None:
    """Patch flipping of MIL relevance methods on feature bags (attnmap.evaluate.slides)."""
    from tqdm.auto import tqdm

    from attnmap.evaluate.slides import evaluate_bags, format_flipping_table, skipped_notes, write_flipping
    from attnmap.mil.bags import collect_bags, read_bag
    from attnmap.mil.checkpoint import load_mil
    from attnmap.mil.explain import METHODS
    from attnmap.mil.fold_files import refuse_run_folder
    from attnmap.provenance import provenance

    if checkpoint is None or not bag_paths:
        raise InputError("slide evaluation needs both --mil-checkpoint and --bags")
    names = _method_names(method_list, list(METHODS), "unknown MIL method(s)", "available")
    paths = collect_bags(bag_paths)  # each slide id once
    if not paths:
        raise InputError("no .h5 or .pt bags found in --bags")
    model = load_mil(refuse_run_folder(checkpoint)).to(resolved_device(device))
    command = " ".join(["attnmap evaluate", f"--mil-checkpoint {checkpoint}",
                        *(f"--bags {path}" for path in bag_paths), f"--methods {method_list}",
                        f"--out {out_dir}", f"--seed {seed}"])
    record = provenance(method=",".join(names), parameters={"seed": seed, "n_slides": len(paths)},
                        model=checkpoint, model_name=checkpoint.name, command=command)
    _remove_earlier_outputs(out_dir, SLIDE_OUTPUTS)
    bags = (read_bag(path) for path in tqdm(paths, desc="slides", disable=quiet or len(paths) < 2))
    evaluation = evaluate_bags(model, bags, names, seed=seed, progress=not quiet)
    csv_path = write_flipping(evaluation, out_dir / SLIDE_OUTPUTS[0], record)
    click.echo(f"{command}\n{len(paths)} slide(s); patch flipping: mean target probability over "
               "0-90% of patches removed (AUC)")
    click.echo(format_flipping_table(evaluation, markdown=markdown))
    for note in skipped_notes(evaluation):
        click.echo(note)
    click.echo(f"wrote {csv_path} (+ {csv_path.with_suffix('.json').name})")


IMAGE_OUTPUTS = ("evaluation.csv", "evaluation.json", "perturbation_curves.png")
SLIDE_OUTPUTS = ("patch_flipping.csv", "patch_flipping.json")


def _remove_earlier_outputs(out_dir: Path, names: tuple[str, ...]) -> None:
    """Delete an earlier evaluation's files in ``out_dir`` before this one starts: they are written one
    after another, so a stop (or error) in between would leave a new table beside an old plot or
    sidecar, read as one evaluation's."""
    from attnmap.io_utils import check_writable

    for name in names:
        check_writable(out_dir / name)
        (out_dir / name).unlink(missing_ok=True)


# the options each kind of evaluation reads (by parameter name); --methods and --out serve all three
_MODE_OPTIONS = {
    "images": ("model_spec", "checkpoint", "data", "n_images", "batch_size", "pointing_tolerance", "seed",
               "markdown", "device"),
    "bags": ("mil_checkpoint", "bag_paths", "seed", "markdown", "device"),
    "run": ("run_dir", "annotations"),
}
_MODE_NAMES = {"images": "image evaluation", "bags": "--mil-checkpoint/--bags", "run": "--run/--annotations"}


def _refuse_other_modes(annotated: bool, slides: bool) -> None:
    """An option of another kind of evaluation given on the command line is refused: it would be
    silently ignored (--n with --bags, --bags with --run)."""
    from click.core import ParameterSource

    context = click.get_current_context()
    mode = "run" if annotated else "bags" if slides else "images"
    for parameter in context.command.params:
        name = parameter.name
        if context.get_parameter_source(name) != ParameterSource.COMMANDLINE:
            continue
        owners = [kind for kind, names in _MODE_OPTIONS.items() if name in names]
        if owners and mode not in owners:
            flag = max(parameter.opts, key=len)
            raise InputError(f"{flag} is an option of {_MODE_NAMES[owners[0]]}, not of {_MODE_NAMES[mode]}")


def _method_names(
    method_list: str, available: list[str], unknown_text: str, available_text: str
) -> list[str]:
    """The names of ``--methods`` ('all' = every available one); unknown or repeated names are refused."""
    requested = [name.strip() for name in method_list.split(",") if name.strip()]
    names = available if method_list.strip() == "all" else requested
    unknown = [name for name in names if name not in available]
    if unknown or not names:
        raise InputError(f"{unknown_text} {', '.join(unknown) or '(none given)'}; "
                         f"{available_text}: {', '.join(available)}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InputError(f"--methods lists {', '.join(repeated)} more than once")
    return names


def _command_line(model_spec: str, checkpoint: Path | None, data: str, n_images: int, method_list: str,
                  out_dir: Path, seed: int, batch_size: int, pointing_tolerance: int) -> str:
    parts = ["attnmap evaluate", f"--model {model_spec}"]
    if checkpoint is not None:
        parts.append(f"--checkpoint {checkpoint}")
    parts += [f"--data {data}", f"--n {n_images}", f"--methods {method_list}", f"--out {out_dir}",
              f"--seed {seed}", f"--batch-size {batch_size}", f"--pointing-tolerance {pointing_tolerance}"]
    return " ".join(parts)


def _evaluate_annotated(
    run_dir: Path | None, annotations: Path | None, method_list: str, out_dir: Path
) -> None:
    """Score sets of a `wsi run` folder against annotated lesions (attnmap.evaluate.lesions)."""
    from attnmap.cli.wsi_interchange import evaluate_annotated_run, run_score_sets

    if run_dir is None or annotations is None:
        raise InputError("lesion evaluation needs both --run and --annotations")
    available = run_score_sets(run_dir)
    if not available:
        raise InputError(f"{run_dir} holds no slide with scores (a `wsi run` output folder)")
    # a set some slides lack is not evaluated (a FROC over part of the run): named as such
    names = _method_names(method_list, available, "score set(s) not on every slide of the run:",
                          "every slide has")
    _remove_lesion_reports(out_dir, names)
    command = shlex.join(["attnmap", "evaluate", "--run", str(run_dir), "--annotations", str(annotations),
                          "--methods", method_list, "--out", str(out_dir)])
    for name in names:  # each set's lines (per slide, FROC, file) under its name
        click.echo(f"score set {name}:")
        evaluate_annotated_run(run_dir, annotations, name, out_dir / f"{LESION_REPORT}{name}.json", command)


LESION_REPORT = "lesions_"  # OUT/lesions_<score set>.json


def _remove_lesion_reports(out_dir: Path, names: list[str]) -> None:
    """Delete an earlier evaluation's lesion reports in ``out_dir`` before scoring: one of a score set
    no longer asked for would read as this evaluation's, and one that is asked for must not survive a
    run cut short. Only attnmap's reports go (a JSON object with method, slides and froc); the removal
    of those not asked for is said."""
    import json

    for path in sorted(out_dir.glob(f"{LESION_REPORT}*.json")) if out_dir.is_dir() else []:
        try:
            report = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        if not isinstance(report, dict) or not {"method", "slides", "froc"} <= set(report):
            continue
        path.unlink()
        if path.name[len(LESION_REPORT):-len(".json")] not in names:
            click.echo(f"removed {path}: an earlier evaluation's, of a score set not asked for", err=True)
