"""``attnmap wsi segment|patch|features``: one pipeline stage at a time over the slides given.

Why apart from `attnmap.cli.wsi`: these three commands share their options (generated from the
configuration dataclasses, so each default lives once), the configuration they build and the loop
over slides; ``heatmap``, ``run`` and the interchange commands share none of it.
"""

from __future__ import annotations

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
from attnmap.wsi.parameters import DEFAULTS as TISSUE_DEFAULTS
from attnmap.wsi.pipeline.config import (
    FeaturesConfig,
    PatchingConfig,
    PipelineConfig,
    RunConfig,
    SegmentationConfig,
    check_roi_folder,
)
from attnmap.wsi.setting_names import settings_in

FLAGS = {
    "segmentation.level": "seg-level",
    "patching.level": "patch-level",
    "features.save_pt": "pt",
    "features.encoder_args": "encoder-arg",
}
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
)  # a folder: a DICOM WSI, or else the slides in it (`_entries`)
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


def _each_slide(
    slides: tuple[Path, ...], config: Any, work: Callable[[Any, Any, Any, Any], str], patches: bool = True
) -> None:
    """Run ``work(slide, entry, config, outputs)`` for each slide with a progress bar; echo its summary.
    ``patches``: the work cuts patches, so slides of different pixel sizes are warned of first, as
    in `wsi run` (`warn_mixed_resolutions`).

    A slide that fails (an unreadable file, no tissue, ...) does not stop the slides after it: as in
    `wsi run`, its failure is recorded (`attnmap.parallel.run_item`) and named in its line, and the
    command ends with the failures and exit status 1. One slide given: its failure is the
    command's own error (one line, status 2), as for any other command."""
    from tqdm.auto import tqdm

    from attnmap.lock import folder_lock
    from attnmap.parallel import ItemResult, RunReport, describe_item, record_outcome, run_item
    from attnmap.wsi.pipeline.cohort import failure_lines, slide_line
    from attnmap.wsi.setting_names import option_names

    entries = _entries(slides)

    def one(entry: Any) -> dict[str, str]:
        from attnmap.wsi.pipeline.outputs import SlideOutputs
        from attnmap.wsi.slide import open_slide

        outputs = SlideOutputs(Path(config.run.output_dir), entry.slide_id)
        outputs.remove_temporaries()
        with open_slide(entry.path) as slide:
            return {"summary": f"{entry.slide_id}: {work(slide, entry, config, outputs)}"}

    report = RunReport()
    with folder_lock(config.run.output_dir, "attnmap wsi"), option_names(FLAGS):  # hints name options
        if len(entries) == 1:
            tqdm.write(one(entries[0])["summary"])
            return
        if patches:
            _warn_mixed_resolutions(entries, config)
        for entry in tqdm(entries, desc="slides", unit="slide", disable=quiet()):
            item = ItemResult(item=describe_item(entry), status="pending", item_id=entry.slide_id)
            record_outcome(item, run_item(one, entry))
            report.items.append(item)
            tqdm.write(slide_line(entry.slide_id, item))  # not inside the bar
    if report.failed:
        for line in failure_lines(report):
            click.echo(line, err=True)
        if click.get_current_context().find_root().params.get("debug"):  # no run report keeps them
            for item in report.failed:
                click.echo(f"{item.item}:\n{item.traceback}", err=True)
        raise SystemExit(1)  # click returns (not raises) ctx.exit codes when not standalone


def _warn_mixed_resolutions(entries: list[Any], config: Any) -> None:
    """`wsi run`'s warning for slides scanned at different pixel sizes, its remedy in this command's
    terms (it has no slide list); a slide that does not open is left to its own line."""
    from attnmap.wsi.pipeline.slide_list import warn_mixed_resolutions
    from attnmap.wsi.setting_names import setting
    from attnmap.wsi.slide import open_slide

    mpps = {}
    for entry in entries:
        try:
            with open_slide(entry.path) as slide:
                mpps[entry.slide_id] = slide.mpp
        except Exception:  # noqa: BLE001 - its failure is said by its own line
            continue
    command = click.get_current_context().command_path.removeprefix("attnmap ")  # wsi patch|features
    remedy = (f"give each resolution's slides to a `{command}` of their own, with a "
              f"{setting('patching.patch_size')} that covers the same tissue,")
    warn_mixed_resolutions(mpps, config.patching.patch_size, config.patching.level, remedy)


def _why(reason: str | None) -> str:
    """A stage's reason to have run, as its line ends: the settings in it named as options."""
    return f" ({settings_in(reason)})" if reason else ""


def _entries(slides: tuple[Path, ...]) -> list[Any]:
    """The `SlideEntry` of each slide given: a file; a folder of DICOM files (a DICOM WSI); another
    folder, its slides (files with a slide suffix, DICOM WSI folders), sorted. Ids that would share
    outputs are refused before any work."""
    from attnmap.wsi.pipeline.config import SlideEntry
    from attnmap.wsi.slide import SLIDE_SUFFIXES
    from attnmap.wsi.slide_files import dicom_instance, slide_name

    entries = []
    for given in slides:
        if given.is_dir() and dicom_instance(given) is None:  # a folder of slides
            found = [path for path in sorted(given.iterdir()) if not path.name.startswith(".") and (
                path.is_file() and path.suffix.lower() in SLIDE_SUFFIXES
                or path.is_dir() and dicom_instance(path) is not None)]
            if not found:
                raise click.BadParameter(f"{given} is a folder holding no slide (no DICOM files, no "
                                         f"{', '.join(SLIDE_SUFFIXES)} file)", param_hint="SLIDES")
        else:
            found = [given]
        for path in found:  # a DICOM WSI: its level-0 instance, named after the folder
            instance = dicom_instance(path) if path.is_dir() else path
            entries.append(SlideEntry(str(instance), slide_name(path)))
    seen: dict[str, Any] = {}
    for entry in entries:  # by case too: one output file on a case-insensitive disk
        earlier = seen.setdefault(entry.slide_id.casefold(), entry)
        if earlier is not entry:
            shared = "is given twice" if earlier.path == entry.path else f"and {entry.path} share a name"
            raise click.BadParameter(f"{earlier.path} {shared}: their outputs would collide",
                                     param_hint="SLIDES")
    return entries


@click.command()
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
        return f"{state}, {found} -> {outputs.tissue}" + _why(ran)

    _each_slide(slides, _config(options, out_dir), work, patches=False)


@click.command()
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
        return f"{state}: {len(coords)} patches -> {outputs.patches}" + _why(ran)

    _each_slide(slides, _config(options, out_dir), work)


@click.command()
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
        return f"{state}: {found}" + _why(ran) + removed

    from attnmap.architecture_hints import argument_form
    from attnmap.wsi.pipeline.config_checks import check_features_encoder
    from attnmap.wsi.setting_names import option_names

    config = _config(options, out_dir)
    with argument_form("--encoder-arg"):  # a checkpoint that does not fit: the arguments it needs
        with option_names(FLAGS):  # an encoder that cannot work fails every slide alike: refused first
            check_features_encoder(config.features)
        _each_slide(slides, config, work)
