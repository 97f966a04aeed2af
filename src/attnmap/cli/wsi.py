"""``attnmap wsi``: tissue segmentation, patching, features and heatmaps for whole slides, and ``run``.

Every command writes the layout of `attnmap.wsi.pipeline` (``tissue/``, ``patches/``,
``features/h5_files``, ``heatmaps/``) under ``--out``, so the single-stage commands and
``wsi run`` reuse each other's outputs, and finished stages are skipped on a rerun. Options are
generated from the configuration dataclasses, so each default lives once. Heavy imports happen
inside the commands. Nothing ever prompts.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from attnmap.cli.options import (
    dataclass_options,
    device_option,
    from_options,
    out_option,
    parse_options,
    quiet,
    resolved_device,
)
from attnmap.wsi.heatmap.style import HeatmapStyle
from attnmap.wsi.parameters import DEFAULTS as TISSUE_DEFAULTS
from attnmap.wsi.pipeline.config import (
    FeaturesConfig,
    HeatmapConfig,
    PatchingConfig,
    PipelineConfig,
    RunConfig,
    SegmentationConfig,
    check_roi_folder,
)

STYLE_FIELDS = tuple(item.name for item in dataclasses.fields(HeatmapStyle))
FLAGS = {"segmentation.level": "seg-level", "patching.level": "patch-level", "features.save_pt": "pt"}
"""The options named otherwise than their configuration field (dotted key → option name)."""


def _flags(section: str) -> dict[str, str]:
    return {key.split(".", 1)[1]: flag for key, flag in FLAGS.items() if key.startswith(section + ".")}


_segmentation_options = dataclass_options(
    SegmentationConfig, "segmentation", flags=_flags("segmentation"), shown_defaults=TISSUE_DEFAULTS
)
_patching_options = dataclass_options(PatchingConfig, "patching", flags=_flags("patching"))
_features_options = dataclass_options(
    FeaturesConfig, "features", skip=("seed", "encoder_args"), flags=_flags("features")
)
_encoder_arg_option = click.option(
    "--encoder-arg",
    "encoder_args",
    multiple=True,
    metavar="KEY=VALUE",
    help="Argument of a timm encoder architecture (repeatable), e.g. init_values=1e-5, "
    "mlp_layer=SwiGLUPacked; of an hf:FOLDER encoder, its readout, e.g. readout=cls_and_patch_mean "
    "(features.encoder_args).",
)
_slides_argument = click.argument(
    "slides", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path)
)  # a folder: a DICOM WSI
_out_option = out_option("Output folder (the `wsi run` layout).")


def _config(options: dict[str, Any], out_dir: Path) -> PipelineConfig:
    """A `PipelineConfig` from command-line options (no slide list or model needed for single stages)."""
    config = PipelineConfig()
    config.segmentation = SegmentationConfig(**from_options(SegmentationConfig, "segmentation", options))
    config.segmentation.resolved()  # a preset that disagrees with a given value is an error now
    if "patching__patch_size" in options:
        config.patching = PatchingConfig(**from_options(PatchingConfig, "patching", options))
        check_roi_folder(config.patching.roi_annotations)
    if "features__encoder" in options:
        values = from_options(FeaturesConfig, "features", options)
        values["checkpoint"] = str(values["checkpoint"]) if values["checkpoint"] else None
        values["encoder_args"] = parse_options(options.pop("encoder_args", ()), "--encoder-arg")
        config.features = FeaturesConfig(**values)
    config.run = RunConfig(output_dir=str(out_dir), device=options.get("device") or "auto")
    return config


def _each_slide(slides: tuple[Path, ...], config: Any, work: Callable[[Any, Any, Any, Any], str]) -> None:
    """Run ``work(slide, entry, config, outputs)`` for each slide with a progress bar; echo its summary."""
    from tqdm.auto import tqdm

    from attnmap.lock import folder_lock
    from attnmap.wsi.pipeline.config import SlideEntry
    from attnmap.wsi.pipeline.outputs import SlideOutputs
    from attnmap.wsi.setting_names import option_names
    from attnmap.wsi.slide import open_slide
    from attnmap.wsi.slide_files import dicom_instance, slide_name

    entries = []
    for path in slides:
        if path.is_dir():  # a DICOM WSI: its level-0 instance, named after the folder
            instance = dicom_instance(path)
            if instance is None:
                raise click.BadParameter(f"{path} is a folder without DICOM files, not a slide",
                                         param_hint="SLIDES")
            entries.append(SlideEntry(str(instance), slide_name(path)))
        else:
            entries.append(SlideEntry(str(path), slide_name(path)))
    ids = [entry.slide_id for entry in entries]
    if len(set(ids)) != len(ids):
        raise click.BadParameter(
            "two slides share a file name (stem); outputs would collide", param_hint="SLIDES"
        )
    with folder_lock(config.run.output_dir, "attnmap wsi"), option_names(FLAGS):  # hints name options
        for entry in tqdm(entries, desc="slides", unit="slide", disable=quiet() or len(slides) < 2):
            outputs = SlideOutputs(Path(config.run.output_dir), entry.slide_id)
            outputs.remove_temporaries()
            with open_slide(entry.path) as slide:
                tqdm.write(f"{entry.slide_id}: {work(slide, entry, config, outputs)}")  # not inside the bar


@click.group()
def wsi() -> None:
    """Whole slides: tissue, patches, features, heatmaps, and `run` for a cohort from a YAML config."""


@wsi.command()
@_slides_argument
@_out_option
@_segmentation_options
def segment(slides: tuple[Path, ...], out_dir: Path, **options: Any) -> None:
    """Tissue segmentation: tissue/<slide>.json (level-0 contours) and tissue/<slide>_mask.png."""
    from attnmap.io_utils import save_png
    from attnmap.provenance import provenance
    from attnmap.wsi.pipeline.fingerprint import StageFingerprints
    from attnmap.wsi.pipeline.stages import tissue_stage

    def work(slide: Any, entry: Any, config: Any, outputs: Any) -> str:
        prints = StageFingerprints(entry, config)
        tissue, ran = tissue_stage(slide, entry, config, outputs, prints, progress=not quiet())
        mask_png = outputs.tissue_mask
        # the tissue's fingerprint: `wsi patch` may have remade the tissue file without a mask
        if ran or prints.tissue.check(mask_png) is not None:
            mask = tissue.seg_mask().astype("uint8") * 255
            record = provenance(
                method="segment_tissue", parameters=tissue.parameters, slide=Path(entry.path).name
            )
            save_png(mask_png, mask, {**record, **prints.tissue.record()})
        state = "segmented" if ran else "already segmented"
        found = f"{len(tissue.contours)} tissue region(s), {tissue.fraction():.1%} tissue"
        return f"{state}, {found} -> {outputs.tissue}" + (f" ({ran})" if ran else "")

    _each_slide(slides, _config(options, out_dir), work)


@wsi.command()
@_slides_argument
@_out_option
@_segmentation_options
@_patching_options
def patch(slides: tuple[Path, ...], out_dir: Path, **options: Any) -> None:
    """Patch grid on the tissue: patches/<slide>.h5 (`coords` with CLAM's attributes)."""
    from attnmap.wsi.pipeline.stages import patch_stage, tissue_stage

    def work(slide: Any, entry: Any, config: Any, outputs: Any) -> str:
        tissue, _ = tissue_stage(slide, entry, config, outputs, progress=not quiet())
        coords, ran = patch_stage(slide, tissue, entry, config, outputs, progress=not quiet())
        state = "patched" if ran else "already patched"
        return f"{state}: {len(coords)} patches -> {outputs.patches}" + (f" ({ran})" if ran else "")

    _each_slide(slides, _config(options, out_dir), work)


@wsi.command()
@_slides_argument
@_out_option
@_features_options
@_encoder_arg_option
@device_option()
@_segmentation_options
@_patching_options
def features(slides: tuple[Path, ...], out_dir: Path, **options: Any) -> None:
    """Patch features: features/h5_files/<slide>.h5 (`features`, `coords`) and pt_files/<slide>.pt.

    Reuses tissue/ and patches/ from --out-dir when present; skips slides whose features exist."""
    from attnmap.wsi.pipeline.outputs import remove_pt, unasked_pt
    from attnmap.wsi.pipeline.stages import features_stage, patch_stage, tissue_stage

    device = resolved_device(options["device"])

    def work(slide: Any, entry: Any, config: Any, outputs: Any) -> str:
        stale_pt = unasked_pt(outputs, config)  # --no-pt after a run that wrote one: not this run's
        if stale_pt:
            remove_pt(outputs)
        tissue, _ = tissue_stage(slide, entry, config, outputs, progress=not quiet())
        coords, _ = patch_stage(slide, tissue, entry, config, outputs, progress=not quiet())
        values, ran = features_stage(coords, entry, config, outputs, device, progress=not quiet())
        state = "extracted" if ran else "already extracted"
        found = f"{values.shape[0]} × {values.shape[1]} features -> {outputs.features_h5}"
        removed = f"; removed {outputs.features_pt} (--no-pt)" if stale_pt else ""
        return f"{state}: {found}" + (f" ({ran})" if ran else "") + removed

    from attnmap.architecture_hints import argument_form

    with argument_form("--encoder-arg"):  # a checkpoint that does not fit: the arguments it needs
        _each_slide(slides, _config(options, out_dir), work)


@wsi.command()
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
    from attnmap.wsi.slide import open_slide
    from attnmap.wsi.slide_files import slide_name

    style = HeatmapStyle(**from_options(HeatmapStyle, "style", options))
    files = from_options(HeatmapConfig, "files", options)  # tiff, tiff_level, scale, legend: the config's
    HeatmapConfig(**dataclasses.asdict(style), **files)  # the config's rules, e.g. --tiff-level needs --tiff
    if (scores is None) == (features_h5 is None) or (features_h5 is not None) != (model is not None):
        raise click.UsageError("give either --scores, or --features together with --model")
    if scores is None and method != "attention":  # never dropped silently: the model's attention is drawn
        raise InputError("--method picks a score set of --scores; with --features the attention is drawn")
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

        # the MIL reader: CLAM / TRIDENT / attnmap h5 alike, and an empty, non-finite or
        # mismatched bag is named before the model runs
        bag = read_bag(features_h5)
        if bag.coords is None:
            raise InputError(f"{features_h5}: no 'coords' dataset; a heatmap needs each patch's position")
        coords = bag.coords
        target = resolved_device(device)
        clam = load_mil(model).eval().to(target)  # CLAM_SB / CLAM_MB or ABMIL
        try:
            bag_result = infer_bag(clam, bag.features.to(target))
        except InputError as error:  # e.g. 512-d features for a 1024-d model: say which bag
            raise InputError(f"{features_h5}: {error}") from error
        values = bag_result.scores("raw")
        with open_slide(slide) as opened:
            stored_patch = recorded_patch_size(features_patch_size, features_h5, opened, patch_size)
        probability = float(bag_result.probs.reshape(-1)[bag_result.prediction])
        title = (f"{slide_name(slide)} · CLAM attention ({model.name}) · predicted class "
                 f"{bag_result.prediction} (p = {probability:.3f})")
        label = "attention"
        record = provenance(
            method="clam_attention_raw_heatmap", parameters=drawn, model=model, model_name=model.name,
            slide=slide.name,
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


@wsi.command()
@click.argument("config_yaml", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out", "-o", "--out-dir", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Output folder (default: run.output_dir of the config).",
)
@click.option("--force", is_flag=True, help="Recompute every stage of every slide.")
@dataclass_options(RunConfig, "run", skip=("output_dir",), unset=True)
def run(config_yaml: Path, out_dir: Path | None, force: bool, **options: Any) -> None:
    """Slide → tissue → patches → features → CLAM attention → heatmaps for every slide of a YAML config.

    Options given here replace the config's `run` keys. Resumable: rerun the same command after
    an interruption or a change; each stage output records a fingerprint of what made it, and
    exactly the stages whose fingerprint changed (and those after them) are recomputed, one line
    per slide saying which and why. A failing slide is recorded in run_report.json and does not
    stop the others (exit status 1)."""
    from tqdm.auto import tqdm

    from attnmap.wsi.pipeline.cohort import run_cohort, slide_summaries
    from attnmap.wsi.pipeline.config import load_config, read_slide_list

    overrides = from_options(RunConfig, "run", options, drop_unset=True)
    if out_dir is not None:
        overrides["output_dir"] = str(out_dir.resolve())
    config = load_config(config_yaml, **overrides)
    report = run_cohort(config, progress=not quiet(), force=force)
    out = Path(config.run.output_dir)
    for line in slide_summaries(report, read_slide_list(config, check_slides=False)):
        click.echo(line)
    click.echo(
        f"{len(report.done)} done, {len(report.skipped)} already done, {len(report.failed)} failed; "
        f"predictions: {out / 'predictions.csv'}; report: {out / 'run_report.json'}"
    )
    for entry in report.failed:
        tqdm.write(f"  failed: {entry.item}: {entry.error_type}: {entry.message}", file=sys.stderr)
    if report.failed:
        raise SystemExit(1)  # click returns (not raises) ctx.exit codes when not standalone


def _add_interchange_commands() -> None:
    """QuPath GeoJSON out, annotations in (kept in their own module)."""
    from attnmap.cli.wsi_interchange import evaluate_command, geojson_command

    wsi.add_command(geojson_command)
    wsi.add_command(evaluate_command)


_add_interchange_commands()
