"""``attnmap mil``: train attention-MIL models and export per-patch attention.

Heavy imports (torch, h5py) happen inside the commands so ``attnmap --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import click

from attnmap.cli.options import device_option, out_option, quiet, resolved_device


@click.group()
def mil() -> None:
    """Attention MIL (ABMIL, CLAM-SB/MB): training and attention export."""


@mil.command()
@click.argument("features_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("labels_csv", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@out_option("Folder for the fold models, metrics and splits.")
@click.option(
    "--model",
    type=click.Choice(["clam_sb", "clam_mb", "abmil"]),
    default="clam_sb",
    show_default=True,
    help="CLAM single- or multi-branch, or plain attention MIL.",
)
@click.option("--folds", type=click.IntRange(min=2), default=5, show_default=True, help="k of k-fold CV.")
@click.option("--max-epochs", type=click.IntRange(min=1), default=200, show_default=True,
              help="Most epochs per fold.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=2e-4, show_default=True)
@click.option("--weight-decay", type=click.FloatRange(min=0), default=1e-5, show_default=True)
@click.option("--optimizer", type=click.Choice(["adam", "sgd"]), default="adam", show_default=True)
@click.option(
    "--bag-weight",
    type=click.FloatRange(0, 1),
    default=0.7,
    show_default=True,
    help="Weight of the bag loss against CLAM's instance loss.",
)
@click.option(
    "--k-sample",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Patches per side for CLAM's instance clustering.",
)
@click.option("--subtyping", is_flag=True, help="CLAM: out-of-class instance loss too (subtyping tasks).")
@click.option(
    "--size",
    type=click.Choice(["small", "big"]),
    default="small",
    show_default=True,
    help="CLAM: embedding 512 wide, attention 256 (small) or 384 (big).",
)
@click.option("--gate/--no-gate", default=True, show_default=True, help="Gated or plain attention.")
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=0.25, show_default=True)
@click.option(
    "--early-stopping/--no-early-stopping",
    default=True,
    show_default=True,
    help="Keep the weights of the lowest validation loss; stop after --patience worse epochs.",
)
@click.option("--patience", type=click.IntRange(min=1), default=20, show_default=True,
              help="Epochs without a lower validation loss before stopping.")
@click.option(
    "--stop-epoch",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="Earliest epoch at which early stopping may stop.",
)
@click.option("--weighted-sample", is_flag=True, help="Draw bags with class-balancing weights.")
@click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.1, show_default=True,
              help="Share of each fold's non-test cases (per class) held out for validation.")
@click.option("--seed", type=int, default=1, show_default=True,
              help="Seed of the folds, weights and sampling.")
@device_option()
def train(features_dir: Path, labels_csv: Path, out_dir: Path, device: str, **options: object) -> None:
    """Cross-validated training on CLAM-layout features (h5_files/ or pt_files/) and a labels CSV
    (slide_id,label[,case_id]). Re-run the same command to resume an interrupted run."""
    from click.core import ParameterSource

    from attnmap.errors import InputError
    from attnmap.mil.train import CLAM_ONLY, train_mil

    context = click.get_current_context()
    if options["model"] == "abmil":  # no instance clustering, fixed widths: the flag would change nothing
        for name in CLAM_ONLY:
            if context.get_parameter_source(name) == ParameterSource.COMMANDLINE:
                flag = "--" + name.replace("_", "-")
                raise InputError(f"{flag} is an option of CLAM (--model clam_sb, clam_mb), not of abmil")
    train_mil(features_dir, labels_csv, out_dir, device=resolved_device(device), progress=not quiet(),
              verbose=True, **options)
    click.echo(f"metrics: {out_dir / 'metrics.csv'}")


@mil.command()
# a folder gets load_mil's message naming the file to give, not click's bare "is a directory"
@click.argument("checkpoint", type=click.Path(exists=True, path_type=Path))
@click.argument("bags", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@out_option("Folder for <bag>_attention.h5 / .csv and predictions.csv.")
@click.option(
    "--branch",
    type=click.IntRange(min=0),
    default=None,
    help="Attention branch to report (CLAM_MB; default: the predicted class).",
)
@click.option(
    "--method",
    type=click.Choice(["attention", "gradient_x_input", "integrated_gradients", "lrp", "occlusion", "all"]),
    default="attention",
    show_default=True,
    help="Relevance scores to add as scores_<method> (h5) and score_<method> (CSV); 'all' adds every one.",
)
@click.option(
    "--target",
    default=None,
    metavar="INDEX|NAME",
    help="Class whose logit the relevance scores explain: its index or its name (see --class-names) "
         "[default: the predicted class].",
)
@click.option("--chunk-size", type=click.IntRange(min=1), default=65_536, show_default=True,
              help="Patches per pass through the model (bounds memory on large bags).")
@click.option("--no-csv", is_flag=True, help="Only write the h5 files.")
@click.option("--class-names", default=None, metavar="NAME,NAME,...",
              help="Name of each class index, for the prediction_name column "
                   "[default: class_names of the model.json that mil train wrote beside the checkpoint].")
@device_option()
def attention(
    checkpoint: Path,
    bags: tuple[Path, ...],
    out_dir: Path,
    branch: int | None,
    method: str,
    target: str | None,
    chunk_size: int,
    no_csv: bool,
    class_names: str | None,
    device: str,
) -> None:
    """Per-patch attention of one or many bags (h5 / .pt files or feature folders; each slide id
    once) to h5 and CSV, plus predictions.csv with every bag's prediction (and its name where the
    classes are named) and probabilities. --method adds relevance
    scores beyond attention (attnmap.mil.explain; docs/mil-relevance.md)."""
    from tqdm.auto import tqdm

    from attnmap.errors import InputError
    from attnmap.mil.bag_stream import open_bag
    from attnmap.mil.bags import collect_bags, stored_feature_size
    from attnmap.mil.base import check_feature_size
    from attnmap.mil.checkpoint import load_mil
    from attnmap.mil.explain import METHODS
    from attnmap.mil.export import export_attention, outputs_of_other_bags, write_predictions_csv
    from attnmap.mil.fold_files import class_names_for, refuse_run_folder
    from attnmap.provenance import provenance
    from attnmap.wsi.pipeline.stage_files import slide_record

    model = load_mil(refuse_run_folder(checkpoint)).to(resolved_device(device))
    names_of_classes = class_names_for(checkpoint, model, class_names)
    target_index = _class_index(target, names_of_classes)
    # the options are checked against the model once, so the error names them, not the first bag
    for option, value, limit, what in (
        ("--branch", branch, model.n_branches, "attention branch(es)"),
        ("--target", target_index, model.n_classes, "classes"),
    ):
        if value is not None and not 0 <= value < limit:
            raise click.BadParameter(f"{value} is out of range: {checkpoint.name} has {limit} {what}",
                                     param_hint=option)
    paths = collect_bags(bags)  # each slide id once
    if not paths:
        raise click.BadParameter("no .h5 or .pt bags found", param_hint="BAGS")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir} is an existing file; give a folder")
    # from the files' headers, before any bag is computed: an empty or odd-sized bag late in a
    # long list stopped the run after hours, with the bags before it rewritten and no predictions.csv
    for path in paths:
        size = stored_feature_size(path)  # its messages name the bag
        try:
            check_feature_size(size, model.embed_dim)
        except InputError as error:
            raise InputError(f"{path}: {error}") from error
    names = [path.stem for path in paths]
    table = Path(out_dir) / "predictions.csv"
    # rewritten at the end: an earlier run's table must not outlive a run that stops at a bad bag
    # after rewriting the bags before it
    for earlier in (table, table.with_suffix(".json")):
        earlier.unlink(missing_ok=True)
    exports = []
    for path, name in tqdm(
        list(zip(paths, names, strict=True)), desc="bags", disable=quiet() or len(paths) < 2
    ):
        try:
            # h5 features stay in their file and are read chunk by chunk: a bag may exceed memory
            with open_bag(path) as bag:
                methods = METHODS if method == "all" else (method,)
                if method == "all" and bag.n_patches < 2:  # removing the only patch leaves no bag
                    methods = tuple(name for name in methods if name != "occlusion")
                    click.echo(f"{path}: 1 patch, so no occlusion scores for this bag", err=True)
                exports.append(
                    export_attention(
                        model,
                        bag,
                        out_dir,
                        slide_id=name,
                        branch=branch,
                        write_csv=not no_csv,
                        chunk_size=chunk_size,
                        model_name=checkpoint.name,
                        # the bag's slide, so `wsi heatmap` refuses these scores on another one
                        extra_provenance={
                            "checkpoint": str(checkpoint), "bag": str(path), **slide_record(path)
                        },
                        methods=methods,
                        target=target_index,
                        progress=not quiet(),
                        class_names=names_of_classes,
                    )
                )
        except InputError as error:  # e.g. 512-d features for a 1024-d model: say which bag
            if str(error).startswith(f"{path}: "):  # the bag's reader named it already
                raise
            raise InputError(f"{path}: {error}") from error
    record = provenance(method="mil-attention", model=checkpoint, model_name=checkpoint.name)
    summary = write_predictions_csv(exports, table, record)
    for item in exports:
        probs = " ".join(f"{p:.3f}" for p in item.result.probs)
        named = f" ({item.prediction_name})" if item.prediction_name is not None else ""
        click.echo(f"{item.slide_id}: prediction {item.result.prediction}{named} (p = {probs}) "
                   f"-> {item.h5_path}")
    click.echo(f"predictions: {summary}")
    others = outputs_of_other_bags(out_dir, names)
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        click.echo(f"note: {out_dir} also holds attention files of {len(others)} bag(s) not in this run "
                   f"({shown}); {summary.name} lists this run's {len(exports)} only", err=True)


def _class_index(target: str | None, names: list[str] | None) -> int | None:
    """``--target`` as a class index: an integer as it is, else a class name looked up in ``names``
    by `attnmap explain`'s rule (`attnmap.class_lookup`)."""
    from attnmap.class_lookup import class_index, target_text
    from attnmap.errors import InputError

    wanted = None if target is None else target_text(target)
    if not isinstance(wanted, str):
        return wanted
    if names is None:
        raise InputError(f"target {wanted!r}: the model's classes have no names (no model.json beside "
                         "the checkpoint); give the class index, or --class-names")
    return class_index(wanted, names)
