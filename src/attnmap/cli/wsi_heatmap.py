"""``attnmap wsi heatmap``: one slide's per-patch scores (or a MIL model's attention on its
features) drawn as a heatmap PNG (and TIFF).

Why apart from `attnmap.cli.wsi`: the command's own options and checks; its input checking lives
in `attnmap.cli.wsi_heatmap_inputs`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from attnmap.cli.options import (
    dataclass_options,
    device_option,
    from_options,
    out_option,
    quiet,
    resolved_device,
)
from attnmap.wsi.heatmap.style import HeatmapStyle
from attnmap.wsi.pipeline.config import HeatmapConfig

STYLE_FIELDS = tuple(item.name for item in dataclasses.fields(HeatmapStyle))


@click.command()
@click.argument("slide", type=click.Path(exists=True, path_type=Path))  # a folder: a DICOM WSI
@click.option(
    "--scores",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Per-patch scores: a _blockmap.h5 (`coords` and `attention_scores` or `scores_<method>`).",
)
@click.option("--method", default="attention", show_default=True,
              help="Score set of --scores to draw: attention or a relevance method (its scores_<method>).")
@click.option(
    "--features",
    "features_h5",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A features h5 (or a .pt bag with coords); with --model, attention is computed from it.",
)
@click.option(
    "--model",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A CLAM (SB/MB) or ABMIL checkpoint (with --features).",
)
@click.option("--class-names", default=None, metavar="NAME,NAME,...",
              help="Name of each class index of --model, for the predicted class in the title "
                   "[default: class_names of the model.json that mil train wrote beside the checkpoint].")
@out_option("Output folder: <slide>_heatmap.png (and .tif).")
@click.option(
    "--patch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Level-0 patch size (default: from the scores file).",
)
@click.option(
    "--tissue",
    "tissue_json",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="tissue/<slide>.json from `wsi segment`: colour tissue pixels only.",
)
@dataclass_options(HeatmapStyle, "style")
@dataclass_options(HeatmapConfig, "files", skip=(*STYLE_FIELDS, "save_original", "fine"))
@device_option()
def heatmap(
    slide: Path,
    scores: Path | None,
    features_h5: Path | None,
    model: Path | None,
    class_names: str | None,
    out_dir: Path,
    patch_size: int | None,
    tissue_json: Path | None,
    device: str,
    method: str,
    **options: Any,
) -> None:
    """Draw a heatmap of per-patch scores (or of a CLAM model's attention on a features file)."""
    from dataclasses import asdict

    from attnmap.cli.wsi_heatmap_inputs import check_inputs_made_from, recorded_patch_size, signed_defaults
    from attnmap.errors import InputError
    from attnmap.provenance import provenance
    from attnmap.wsi.pipeline.drawing import write_heatmap_files
    from attnmap.wsi.pipeline.outputs import made_by_attnmap
    from attnmap.wsi.pipeline.stage_files import features_patch_size, load_tissue, scores_file_patch_size
    from attnmap.wsi.scores_io import load_scores_h5
    from attnmap.wsi.setting_names import option_names
    from attnmap.wsi.slide import open_slide
    from attnmap.wsi.slide_files import slide_name

    style = HeatmapStyle(**from_options(HeatmapStyle, "style", options))
    files = from_options(HeatmapConfig, "files", options)  # tiff, tiff_level, scale, legend: the config's
    HeatmapConfig(**dataclasses.asdict(style), **files)  # the config's rules, e.g. --tiff-level needs --tiff
    if (scores is None) == (features_h5 is None) or (features_h5 is not None) != (model is not None):
        raise click.UsageError("give either --scores, or --features together with --model")
    if scores is None and method != "attention":  # never dropped silently: the model's attention is drawn
        raise InputError("--method picks a score set of --scores; with --features the attention is drawn")
    if model is None and class_names is not None:
        raise InputError("--class-names names the classes of --model; --scores carry no prediction")
    drawn = {**asdict(style), "patch_size": patch_size, "scale": files["scale"]}
    with open_slide(slide) as opened:  # before any drawing: another slide's mask colours wrong places
        tissue = load_tissue(tissue_json, of_slide=opened) if tissue_json else None
    check_inputs_made_from(slide, scores, features_h5, tissue_json)  # another slide's, even of its size
    if scores is not None:
        coords, values = load_scores_h5(scores, method)
        style, files = signed_defaults(style, files, values, method)
        drawn = {**asdict(style), "patch_size": patch_size, "scale": files["scale"]}
        with open_slide(slide) as opened:  # a patch size recorded at a level: its downsample
            stored_patch = recorded_patch_size(scores_file_patch_size, scores, opened, patch_size)
        parameters = {**drawn, "scores": scores.name, "score_set": method}
        record = provenance(method="heatmap", parameters=parameters, slide=slide.name)
        title = f"{slide_name(slide)} · {scores.name}" + (f" · {method}" if method != "attention" else "")
        label = "score"
    else:
        from attnmap.mil import infer_bag, load_mil, read_bag
        from attnmap.mil.fold_files import class_names_for

        # the MIL reader: CLAM / TRIDENT / attnmap h5 alike, and an empty, non-finite or
        # mismatched bag is named before the model runs
        bag = read_bag(features_h5)
        if bag.coords is None:
            raise InputError(f"{features_h5}: no 'coords' dataset; a heatmap needs each patch's position")
        coords = bag.coords
        target = resolved_device(device)
        clam = load_mil(model).eval().to(target)  # CLAM_SB / CLAM_MB or ABMIL
        names = class_names_for(model, clam, class_names)  # before the model runs: a misfit is refused
        try:
            bag_result = infer_bag(clam, bag.features.to(target))
        except InputError as error:  # e.g. 512-d features for a 1024-d model: say which bag
            raise InputError(f"{features_h5}: {error}") from error
        values = bag_result.scores("raw")
        with open_slide(slide) as opened:
            stored_patch = recorded_patch_size(features_patch_size, features_h5, opened, patch_size)
        probability = float(bag_result.probs.reshape(-1)[bag_result.prediction])
        predicted = names[bag_result.prediction] if names else f"class {bag_result.prediction}"
        title = (f"{slide_name(slide)} · CLAM attention ({model.name}) · predicted {predicted} "
                 f"(p = {probability:.3f})")
        label = "attention"
        record = provenance(
            method="clam_attention_raw_heatmap", parameters=drawn, model=model, model_name=model.name,
            slide=slide.name, prediction=bag_result.prediction,
            **({"prediction_name": predicted} if names else {}),
        )
    source = scores or features_h5
    if patch_size is not None and stored_patch is not None and patch_size != stored_patch:
        raise InputError(
            f"--patch-size {patch_size} disagrees with the {stored_patch}-px (level-0) patches "
            f"{source.name} was made with: leave --patch-size out"
        )
    patch_size = patch_size or stored_patch
    if patch_size is None:
        raise InputError(f"{source.name} does not record the patch size: give --patch-size (level-0 pixels)")
    out_dir.mkdir(parents=True, exist_ok=True)
    tiff = out_dir / f"{slide_name(slide)}_heatmap.tif"
    # an earlier run's TIFF beside this PNG would be taken for this heatmap's: removed (only attnmap's)
    stale_tiff = not files["tiff"] and tiff.is_file() and made_by_attnmap(tiff)
    if stale_tiff:
        tiff.unlink()
    with option_names({}):  # a level that does not exist: named as the option that asked for it
        written = write_heatmap_files(
            slide,
            coords,
            values,
            patch_size,
            out_dir / f"{slide_name(slide)}_heatmap.png",
            style,
            tissue=tissue,
            tiff=tiff if files["tiff"] else None,
            tiff_level=files["tiff_level"],
            metadata=record,
            scale=files["scale"],
            title=title if files["legend"] else None,
            label=label,
            progress=not quiet(),
        )
    click.echo("heatmap: " + " and ".join(str(path) for path in written))
    if stale_tiff:
        click.echo(f"removed {tiff}: an earlier run's TIFF (--tiff not given)")
