"""``attnmap wsi``: tissue segmentation, patching, features and heatmaps for whole slides, and ``run``.

Every command writes the layout of `attnmap.wsi.pipeline` (``tissue/``, ``patches/``,
``features/h5_files``, ``heatmaps/``) under ``--out-dir``, so the single-stage commands and
``wsi run`` reuse each other's outputs, and finished stages are skipped on a rerun. Heavy imports
happen inside the commands, so ``attnmap --help`` stays quick. Nothing ever prompts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

SEGMENT_PRESETS = ("tcga", "bwh_biopsy", "bwh_resection")
CONTOUR_CHECKS = ("four_pt", "four_pt_hard", "center", "basic")


def _segmentation_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--seg-level",
            type=click.IntRange(min=0),
            default=None,
            help="Level to segment at (default: best for downsample 64).",
        ),
        click.option(
            "--preset",
            type=click.Choice(SEGMENT_PRESETS),
            default=None,
            help="CLAM's parameter presets (override the thresholds below).",
        ),
        click.option("--sthresh", type=int, default=8, show_default=True, help="Saturation threshold."),
        click.option("--mthresh", type=int, default=7, show_default=True, help="Median blur kernel (odd)."),
        click.option(
            "--close",
            type=click.IntRange(min=0),
            default=4,
            show_default=True,
            help="Morphological closing kernel (0: none).",
        ),
        click.option("--use-otsu", is_flag=True, help="Otsu threshold instead of --sthresh."),
        click.option(
            "--a-t",
            type=click.FloatRange(min=0),
            default=100,
            show_default=True,
            help="Minimum tissue area, in 512×512 level-0 patches.",
        ),
        click.option(
            "--a-h",
            type=click.FloatRange(min=0),
            default=16,
            show_default=True,
            help="Minimum hole area, in 512×512 level-0 patches.",
        ),
        click.option("--max-n-holes", type=click.IntRange(min=0), default=8, show_default=True),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _patching_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--patch-size",
            type=click.IntRange(min=1),
            default=256,
            show_default=True,
            help="Patch size in pixels of --patch-level.",
        ),
        click.option(
            "--step", type=click.IntRange(min=1), default=None, help="Grid step (default: patch size)."
        ),
        click.option("--patch-level", type=click.IntRange(min=0), default=0, show_default=True),
        click.option(
            "--contour-check", type=click.Choice(CONTOUR_CHECKS), default="four_pt", show_default=True
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


_slides_argument = click.argument(
    "slides", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
_out_dir_option = click.option(
    "--out-dir",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Output folder (the `wsi run` layout).",
)


def _config(options: dict[str, Any], out_dir: Path) -> Any:
    """A `PipelineConfig` from command-line options (no slide list or model needed for single stages)."""
    from attnmap.wsi.pipeline.config import (
        FeaturesConfig,
        PatchingConfig,
        PipelineConfig,
        RunConfig,
        SegmentationConfig,
    )

    config = PipelineConfig()
    config.segmentation = SegmentationConfig(
        preset=options.get("preset"),
        level=options.get("seg_level"),
        sthresh=options.get("sthresh", 8),
        mthresh=options.get("mthresh", 7),
        close=options.get("close", 4),
        use_otsu=options.get("use_otsu", False),
        a_t=options.get("a_t", 100),
        a_h=options.get("a_h", 16),
        max_n_holes=options.get("max_n_holes", 8),
    )
    if "patch_size" in options:
        config.patching = PatchingConfig(
            patch_size=options["patch_size"],
            step=options.get("step"),
            level=options["patch_level"],
            contour_check=options["contour_check"],
        )
    if "encoder" in options:
        config.features = FeaturesConfig(
            encoder=options["encoder"],
            checkpoint=str(options["checkpoint"]) if options["checkpoint"] else None,
            input_size=options["input_size"],
            batch_size=options["batch_size"],
            num_workers=options["num_workers"],
            save_pt=options["save_pt"],
        )
    config.run = RunConfig(output_dir=str(out_dir), device=options.get("device", "auto"))
    return config


def _each_slide(slides: tuple[Path, ...], config: Any, work: Callable[[Any, Any, Any, Any], str]) -> None:
    """Run ``work(slide, entry, config, outputs)`` for each slide with a progress bar; echo its summary."""
    from tqdm.auto import tqdm

    from attnmap.wsi.pipeline.config import SlideEntry
    from attnmap.wsi.pipeline.outputs import SlideOutputs
    from attnmap.wsi.slide import open_slide

    ids = [path.stem for path in slides]
    if len(set(ids)) != len(ids):
        raise click.BadParameter(
            "two slides share a file name (stem); outputs would collide", param_hint="SLIDES"
        )
    for path in tqdm(slides, desc="slides", unit="slide", disable=len(slides) < 2):
        entry = SlideEntry(str(path), path.stem)
        outputs = SlideOutputs(Path(config.run.output_dir), entry.slide_id)
        outputs.remove_temporaries()
        with open_slide(path) as slide:
            click.echo(f"{entry.slide_id}: {work(slide, entry, config, outputs)}")


@click.group()
def wsi() -> None:
    """Whole slides: tissue, patches, features, heatmaps, and `run` for a cohort from a YAML config."""


@wsi.command()
@_slides_argument
@_out_dir_option
@_segmentation_options
def segment(slides: tuple[Path, ...], out_dir: Path, **options: Any) -> None:
    """Tissue segmentation: tissue/<slide>.json (level-0 contours) and tissue/<slide>_mask.png."""
    from attnmap.io_utils import save_png
    from attnmap.provenance import provenance
    from attnmap.wsi.pipeline.stages import tissue_stage

    def work(slide: Any, entry: Any, config: Any, outputs: Any) -> str:
        tissue, ran = tissue_stage(slide, entry, config, outputs)
        mask_png = outputs.tissue.with_name(f"{entry.slide_id}_mask.png")
        if ran or not mask_png.is_file():
            mask = tissue.mask(tissue.seg_level).astype("uint8") * 255
            save_png(
                mask_png,
                mask,
                provenance(
                    method="segment_tissue", parameters=tissue.parameters, slide=Path(entry.path).name
                ),
            )
        state = "segmented" if ran else "already segmented"
        found = f"{len(tissue.contours)} tissue region(s), {tissue.fraction():.1%} tissue"
        return f"{state}, {found} -> {outputs.tissue}"

    _each_slide(slides, _config(options, out_dir), work)


@wsi.command()
@_slides_argument
@_out_dir_option
@_segmentation_options
@_patching_options
def patch(slides: tuple[Path, ...], out_dir: Path, **options: Any) -> None:
    """Patch grid on the tissue: patches/<slide>.h5 (`coords` with CLAM's attributes)."""
    from attnmap.wsi.pipeline.stages import patch_stage, tissue_stage

    def work(slide: Any, entry: Any, config: Any, outputs: Any) -> str:
        tissue, _ = tissue_stage(slide, entry, config, outputs)
        coords, ran = patch_stage(slide, tissue, entry, config, outputs)
        return f"{'patched' if ran else 'already patched'}: {len(coords)} patches -> {outputs.patches}"

    _each_slide(slides, _config(options, out_dir), work)


@wsi.command()
@_slides_argument
@_out_dir_option
@click.option(
    "--encoder",
    default="resnet50_trunc",
    show_default=True,
    help="resnet50_trunc, timm:MODEL_NAME, a registered name, torchscript:PATH, or a weights file.",
)
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Weights for the encoder (without: seeded random weights, for testing only).",
)
@click.option("--input-size", type=click.IntRange(min=8), default=None, help="Resize patches to this size.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option(
    "--num-workers", type=click.IntRange(min=0), default=0, show_default=True, help="Patch-reading processes."
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--pt/--no-pt", "save_pt", default=True, show_default=True, help="Also write pt_files/<slide>.pt."
)
@_segmentation_options
@_patching_options
def features(slides: tuple[Path, ...], out_dir: Path, **options: Any) -> None:
    """Patch features: features/h5_files/<slide>.h5 (`features`, `coords`) and pt_files/<slide>.pt.

    Reuses tissue/ and patches/ from --out-dir when present; skips slides whose features exist."""
    from attnmap.wsi.features import resolve_device
    from attnmap.wsi.pipeline.stages import features_stage, patch_stage, tissue_stage

    device = str(resolve_device(options["device"]))

    def work(slide: Any, entry: Any, config: Any, outputs: Any) -> str:
        tissue, _ = tissue_stage(slide, entry, config, outputs)
        coords, _ = patch_stage(slide, tissue, entry, config, outputs)
        values, ran = features_stage(coords, entry, config, outputs, device, progress=True)
        state = "extracted" if ran else "already extracted"
        return f"{state}: {values.shape[0]} × {values.shape[1]} features -> {outputs.features_h5}"

    _each_slide(slides, _config(options, out_dir), work)


@wsi.command()
@click.argument("slide", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--scores",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Per-patch scores: a _blockmap.h5 (`attention_scores`, `coords`).",
)
@click.option(
    "--features",
    "features_h5",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A features h5; with --model, attention is computed from it.",
)
@click.option(
    "--model",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A CLAM checkpoint (with --features).",
)
@click.option(
    "--out",
    "-o",
    "out_png",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Heatmap PNG to write.",
)
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
@click.option(
    "--vis-level", type=int, default=-1, show_default=True, help="-1: best level for downsample 32."
)
@click.option("--cmap", default="jet", show_default=True)
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.4, show_default=True)
@click.option("--percentiles/--raw", default=True, show_default=True, help="Colour by percentile rank.")
@click.option("--blur", is_flag=True)
@click.option("--blank-canvas", is_flag=True, help="Draw on white instead of the slide.")
@click.option(
    "--tiff",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write a pyramidal TIFF overlay here.",
)
@click.option("--tiff-level", type=click.IntRange(min=0), default=0, show_default=True)
def heatmap(
    slide: Path,
    scores: Path | None,
    features_h5: Path | None,
    model: Path | None,
    out_png: Path,
    patch_size: int | None,
    tissue_json: Path | None,
    tiff: Path | None,
    tiff_level: int,
    **draw: Any,
) -> None:
    """Draw a heatmap of per-patch scores (or of a CLAM model's attention on a features file)."""
    from attnmap.errors import InputError
    from attnmap.provenance import provenance
    from attnmap.wsi.pipeline.drawing import write_heatmap_files
    from attnmap.wsi.pipeline.stage_files import load_scores_with_patch_size, load_tissue

    if (scores is None) == (features_h5 is None) or (features_h5 is not None) != (model is not None):
        raise click.UsageError("give either --scores, or --features together with --model")
    if scores is not None:
        coords, values, stored_patch = load_scores_with_patch_size(scores)
        record = provenance(method="heatmap", parameters={**draw, "scores": scores.name}, slide=slide.name)
    else:
        from attnmap.mil import attention_scores, load_clam
        from attnmap.wsi.features import load_features

        bag, coords = load_features(features_h5)
        values = attention_scores(load_clam(model).eval(), bag, kind="raw")
        stored_patch = None
        record = provenance(
            method="clam_attention_raw_heatmap",
            parameters=draw,
            model=model,
            model_name=model.name,
            slide=slide.name,
        )
    patch_size = patch_size or stored_patch
    if patch_size is None:
        raise InputError("the scores file does not record the patch size: give --patch-size (level-0 pixels)")
    tissue = load_tissue(tissue_json) if tissue_json else None
    written = write_heatmap_files(
        slide,
        coords,
        values,
        patch_size,
        out_png,
        tissue=tissue,
        tiff=tiff,
        tiff_level=tiff_level,
        metadata=record,
        **draw,
    )
    click.echo("heatmap: " + " and ".join(str(path) for path in written))


@wsi.command()
@click.argument("config_yaml", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Parallel worker processes (default: run.workers of the config).",
)
@click.option("--scheduler", default=None, help="Address of an existing Dask scheduler (tcp://host:port).")
@click.option("--device", type=str, default=None, help="auto, cpu, cuda or cuda:N (default: run.device).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def run(
    config_yaml: Path, workers: int | None, scheduler: str | None, device: str | None, quiet: bool
) -> None:
    """Slide → tissue → patches → features → CLAM attention → heatmaps for every slide of a YAML config.

    Resumable: rerun the same command after an interruption; finished stages and slides are skipped.
    A failing slide is recorded in run_report.json and does not stop the others (exit status 1)."""
    from attnmap.wsi.pipeline.cohort import run_cohort
    from attnmap.wsi.pipeline.config import load_config

    config = load_config(config_yaml, device=device, workers=workers, scheduler=scheduler)
    report = run_cohort(config, progress=not quiet)
    out_dir = Path(config.run.output_dir)
    click.echo(
        f"{len(report.done)} done, {len(report.skipped)} already done, {len(report.failed)} failed; "
        f"predictions: {out_dir / 'predictions.csv'}; report: {out_dir / 'run_report.json'}"
    )
    for entry in report.failed:
        click.echo(f"  failed: {entry.item}: {entry.error_type}: {entry.message}", err=True)
    if report.failed:
        raise SystemExit(1)  # click returns (not raises) ctx.exit codes when not standalone
