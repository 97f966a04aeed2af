"""Where `attnmap wsi run` puts each slide's files, and which of them can be reused as they are.

A stage's output is reused only when it is intact (`attnmap.stored`) and was made with the
fingerprint this configuration gives it (`attnmap.wsi.pipeline.fingerprint`); otherwise the
reason (missing, damaged, which inputs changed) is what the run reports for that stage. Patch and
feature files that attnmap did not write (CLAM's own, no attnmap provenance at all) are the
user's inputs: used as they are once they pass the checks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from attnmap.fingerprint import FINGERPRINT_KEY
from attnmap.io_utils import remove_stale_temporaries
from attnmap.stored import DamagedOutputError, stored_record
from attnmap.wsi.pipeline.config import PipelineConfig, SlideEntry
from attnmap.wsi.pipeline.fingerprint import StageFingerprints

STAGES = ("tissue", "patches", "features", "attention", "heatmap", "sampling")
SAMPLE_FOLDERS = ("topk_high_attention", "bottomk_low_attention")  # `save_patch_samples`' folders


@dataclass(frozen=True)
class SlideOutputs:
    """Every file `run_slide` writes for one slide."""

    root: Path
    slide_id: str

    @property
    def tissue(self) -> Path:
        return self.root / "tissue" / f"{self.slide_id}.json"

    @property
    def tissue_mask(self) -> Path:
        """`wsi segment`'s picture of the tissue; no other command writes it."""
        return self.root / "tissue" / f"{self.slide_id}_mask.png"

    @property
    def patches(self) -> Path:
        return self.root / "patches" / f"{self.slide_id}.h5"

    @property
    def features_h5(self) -> Path:
        return self.root / "features" / "h5_files" / f"{self.slide_id}.h5"

    @property
    def features_pt(self) -> Path:
        return self.root / "features" / "pt_files" / f"{self.slide_id}.pt"

    @property
    def heatmap_dir(self) -> Path:
        return self.root / "heatmaps" / self.slide_id

    def named(self, suffix: str) -> Path:
        return self.heatmap_dir / f"{self.slide_id}_{suffix}"

    @property
    def prediction(self) -> Path:
        return self.named("prediction.json")

    def remove_temporaries(self) -> None:
        """Delete what an interrupted run of this slide left half-written (only this slide's files,
        only those whose writing process is gone)."""
        remove_stale_temporaries(self.heatmap_dir)
        for folder in (
            self.tissue.parent,
            self.patches.parent,
            self.features_h5.parent,
            self.features_pt.parent,
        ):
            remove_stale_temporaries(folder, pattern=f".{self.slide_id}", recursive=False)


# ----------------------------------------------------------------------------------- reuse checks
def stored_rows(path: Path, dataset: str) -> int | None:
    """Rows of an h5 dataset, or None when the file is missing or unreadable."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            return int(handle[dataset].shape[0])
    except (OSError, KeyError, ValueError, IndexError):
        return None


def features_h5_reason(outputs: SlideOutputs, prints: StageFingerprints, n: int | None) -> str | None:
    """Why the features h5 must be computed again (None: reuse it)."""
    return prints.features.check(
        outputs.features_h5, accept_foreign=True, datasets=("features", "coords"), rows=n
    )


def features_pt_reason(outputs: SlideOutputs, prints: StageFingerprints) -> str | None:
    """Why ``pt_files/<id>.pt`` (and its record ``.pt.json``) must be written again beside a
    reusable h5: from the h5's features, without computing them again."""
    from attnmap.provenance import sidecar_path

    try:
        if stored_record(outputs.features_pt) is None:
            return "missing .pt"
        h5_record = stored_record(outputs.features_h5) or {}
    except DamagedOutputError as error:
        return f"damaged: {error}"
    if FINGERPRINT_KEY not in h5_record:  # features brought by the user: no record to copy
        return None
    reason = prints.features.check(sidecar_path(outputs.features_pt))
    return None if reason is None else f".pt.json {reason}"


def features_reason(
    outputs: SlideOutputs, prints: StageFingerprints, config: PipelineConfig, n: int | None
) -> str | None:
    reason = features_h5_reason(outputs, prints, n)
    if reason is None and config.features.save_pt:
        return features_pt_reason(outputs, prints)
    return reason


def attention_reason(outputs: SlideOutputs, prints: StageFingerprints, n: int) -> str | None:
    return prints.attention.check(
        outputs.named("blockmap.h5"), datasets=("attention_scores", "coords"), rows=n
    )


def unasked_files(config: PipelineConfig) -> list[str]:
    """Heatmap-folder files this configuration does not ask for: made for an earlier one, they would
    no longer describe this run (the viewer would show fine maps that were turned off)."""
    h = config.heatmap
    names = [] if h.tiff else ["heatmap.tif"]
    names += [] if h.save_original else ["original.png"]
    names += [] if h.overlap > 0 else ["overlap_blockmap.h5"]
    if h.fine is None:
        names += ["fine_maps.h5", "fine_gallery.png", "heatmap_fine.tif"]
    elif not h.tiff:
        names += ["heatmap_fine.tif"]
    return names


def unasked_outputs(outputs: SlideOutputs, config: PipelineConfig) -> list[str]:
    """This slide's files that an earlier configuration asked for and this one does not (a TIFF,
    the original, fine maps, sample crops, the GeoJSON, the features ``.pt``): made for another
    run, they would pass for this one's. Only attnmap's own ``.pt`` counts (one with its record
    ``.pt.json``): a CLAM ``.pt`` brought beside the user's features is an input."""
    names = [name for name in unasked_files(config) if outputs.named(name).exists()]
    samples = (outputs.named("samples.json"), *(outputs.heatmap_dir / folder for folder in SAMPLE_FOLDERS))
    if config.sampling.top_k == 0 and config.sampling.bottom_k == 0 and any(p.exists() for p in samples):
        names.append("sample crops")
    geojson = outputs.named("scores.geojson")
    if not config.export.geojson and (geojson.exists() or outputs.named("scores.geojson.json").exists()):
        names.append(geojson.name.removeprefix(f"{outputs.slide_id}_"))
    if unasked_pt(outputs, config):
        names.append(f"pt_files/{outputs.features_pt.name}")
    return names


def unasked_pt(outputs: SlideOutputs, config: PipelineConfig) -> bool:
    """Whether an earlier run left attnmap's ``pt_files/<id>.pt`` (or its record) that this
    configuration (``features.save_pt`` off) does not ask for."""
    from attnmap.provenance import sidecar_path

    record = sidecar_path(outputs.features_pt)
    return not config.features.save_pt and record.exists() and made_by_attnmap(record)


def remove_pt(outputs: SlideOutputs) -> None:
    """Delete ``pt_files/<id>.pt`` and its record."""
    from attnmap.provenance import sidecar_path

    outputs.features_pt.unlink(missing_ok=True)
    sidecar_path(outputs.features_pt).unlink(missing_ok=True)


def heatmap_reason(outputs: SlideOutputs, prints: StageFingerprints, config: PipelineConfig) -> str | None:
    """Why the heatmap files must be drawn again (PNG; TIFF, original and fine maps when asked);
    files no longer asked for are `unasked_outputs`."""
    names = ["heatmap.png"]
    names += ["heatmap.tif"] if config.heatmap.tiff else []
    names += ["original.png"] if config.heatmap.save_original else []
    if config.heatmap.fine is not None:  # made by `attnmap.wsi.pipeline.fine_stage`
        reason = fine_maps_reason(outputs, prints)
        if reason is not None:
            return f"fine_maps.h5 {reason}"
        names += ["fine_gallery.png"] + (["heatmap_fine.tif"] if config.heatmap.tiff else [])
    for name in names:
        reason = prints.drawn(name).check(outputs.named(name))
        if reason is not None:
            return f"{name} {reason}" if len(names) > 1 else reason
    return None


def fine_maps_reason(outputs: SlideOutputs, prints: StageFingerprints) -> str | None:
    """Why the fine-map file must be computed again (None: reuse it)."""
    from attnmap.wsi.heatmap.fine_store import FineMapFile

    return prints.fine.check(outputs.named("fine_maps.h5"), datasets=FineMapFile.DATASETS)


def sampling_reason(outputs: SlideOutputs, prints: StageFingerprints, config: PipelineConfig) -> str | None:
    """Why the top-k / bottom-k crops must be saved again (none asked: earlier ones are
    `unasked_outputs`)."""
    marker = outputs.named("samples.json")
    if config.sampling.top_k == 0 and config.sampling.bottom_k == 0:
        return None
    reason = prints.sampling.check(marker)
    if reason is None:
        for name in json.loads(marker.read_text()).get("files", []):
            try:  # each crop decoded to its end: a cut-off PNG is not a sample
                if stored_record(outputs.heatmap_dir / name) is None:
                    return "damaged: a sample crop is missing"
            except DamagedOutputError as error:
                return f"damaged: {error}"
    return reason


def export_reason(outputs: SlideOutputs, prints: StageFingerprints, config: PipelineConfig) -> str | None:
    """Why the QuPath GeoJSON must be written again (its fingerprint sits in a sidecar JSON); not
    asked: None (an earlier one is `unasked_outputs`)."""
    geojson = outputs.named("scores.geojson")
    if not config.export.geojson:
        return None
    if not geojson.is_file():
        return "missing"
    sidecar = outputs.named("scores.geojson.json")
    reason = prints.export.check(sidecar)
    if reason is None:  # the sidecar says what made it; the file itself must still be what was written
        from attnmap.file_hash import content_sha256

        written = (stored_record(sidecar) or {}).get("geojson_sha256")
        try:
            intact = content_sha256(geojson) == written if written else bool(json.loads(geojson.read_bytes()))
        except (OSError, ValueError):
            intact = False
        if not intact:
            return "damaged: scores.geojson is not the file written"
    return reason


def remove_samples(outputs: SlideOutputs) -> None:
    """Delete the top-k / bottom-k crops and their list (another k or other scores must not leave
    stale ones)."""
    import shutil

    outputs.named("samples.json").unlink(missing_ok=True)
    for folder in SAMPLE_FOLDERS:
        if (outputs.heatmap_dir / folder).is_dir():
            shutil.rmtree(outputs.heatmap_dir / folder)


def made_by_attnmap(path: Path) -> bool:
    """Whether ``path`` is an attnmap output (a damaged file counts as one: it is remade anyway).

    Why ask: only attnmap's own files are deleted when stale or no longer asked for; a file a user
    put at the same name (CLAM's patches or features) is an input."""
    try:
        record = stored_record(path)
    except DamagedOutputError:
        return True
    return record is not None and ("attnmap_version" in record or FINGERPRINT_KEY in record)


def remove_stale_outputs(outputs: SlideOutputs, prints: StageFingerprints, config: PipelineConfig) -> None:
    """Delete, before any stage runs, every output this configuration would not reuse, and the
    files it does not ask for (`unasked_outputs`, named by `stage_reasons` under ``removed``).

    Why up front: a run that then fails or is interrupted (even killed) must not leave the earlier
    configuration's scores, heatmap or prediction beside the new tissue, where the viewer, the
    predictions table and the next run would take them for this run's. Each file is judged by its
    own fingerprint, so reusable ones stay (new patches that come out the same keep the features),
    and patch and feature files attnmap did not write (the user's inputs) are never deleted.
    """
    def stale(path: Path, fingerprint, **verify) -> bool:
        return path.exists() and fingerprint.check(path, **verify) is not None

    if stale(outputs.tissue, prints.tissue):
        outputs.tissue.unlink()
    mask = outputs.tissue_mask  # an earlier `wsi segment`'s, of other parameters (only attnmap's)
    if stale(mask, prints.tissue) and made_by_attnmap(mask):
        mask.unlink()
    if stale(outputs.patches, prints.patches, accept_foreign=True) and made_by_attnmap(outputs.patches):
        outputs.patches.unlink()
    h5 = outputs.features_h5
    if stale(h5, prints.features, accept_foreign=True) and made_by_attnmap(h5):
        pt = outputs.features_pt
        for path in (h5, pt, pt.with_name(pt.name + ".json")):
            path.unlink(missing_ok=True)
    drawn = ("heatmap.png", "heatmap.tif", "original.png", "fine_gallery.png", "heatmap_fine.tif")
    checks = [("blockmap.h5", prints.attention), ("overlap_blockmap.h5", prints.overlap),
              ("fine_maps.h5", prints.fine), ("prediction.json", prints.prediction),
              *((name, prints.drawn(name)) for name in drawn)]
    for name, fingerprint in checks:
        if stale(outputs.named(name), fingerprint):
            outputs.named(name).unlink()
    for name in unasked_files(config):
        outputs.named(name).unlink(missing_ok=True)
    if outputs.heatmap_dir.is_dir() and (
        (config.sampling.top_k == 0 and config.sampling.bottom_k == 0)  # none asked
        or not outputs.named("samples.json").exists()
        or stale(outputs.named("samples.json"), prints.sampling)
    ):
        remove_samples(outputs)
    if not config.export.geojson or export_reason(outputs, prints, config) is not None:
        outputs.named("scores.geojson").unlink(missing_ok=True)
        outputs.named("scores.geojson.json").unlink(missing_ok=True)
    if unasked_pt(outputs, config):
        remove_pt(outputs)


def stage_reasons(
    entry: SlideEntry,
    config: PipelineConfig,
    out_dir: str | Path | None = None,
    prints: StageFingerprints | None = None,
) -> dict[str, str | None]:
    """For each stage (and ``prediction``, ``export``), why it must run, or None when its outputs
    are reusable; ``removed``: the files no longer asked for (`unasked_outputs`), or None."""
    outputs = SlideOutputs(Path(out_dir if out_dir is not None else config.run.output_dir), entry.slide_id)
    prints = prints or StageFingerprints(entry, config, outputs.root)
    reasons: dict[str, str | None] = {
        "tissue": prints.tissue.check(outputs.tissue),
        "patches": prints.patches.check(outputs.patches, accept_foreign=True, datasets=("coords",)),
    }
    n = stored_rows(outputs.patches, "coords") if reasons["patches"] is None else None
    # n None (patches to be made): the checks below say what changed without counting rows
    reasons["features"] = features_reason(outputs, prints, config, n)
    reasons["attention"] = attention_reason(outputs, prints, n)
    reasons["heatmap"] = heatmap_reason(outputs, prints, config)
    reasons["sampling"] = sampling_reason(outputs, prints, config)
    reasons["prediction"] = prints.prediction.check(outputs.prediction)
    reasons["export"] = export_reason(outputs, prints, config)
    unasked = unasked_outputs(outputs, config)
    reasons["removed"] = f"{', '.join(unasked)} (not asked)" if unasked else None
    return reasons


def slide_complete(
    entry: SlideEntry,
    config: PipelineConfig,
    out_dir: str | Path | None = None,
    prints: StageFingerprints | None = None,
) -> bool:
    """Whether every output of ``entry`` is intact and made with this configuration's fingerprints.

    A slide missing a stage file is not complete whatever its fingerprints: said without computing
    them (they hash the slide's bytes, which the slide's own task does in parallel with others')."""
    if not Path(entry.path).is_file():  # a slide gone is not done: its task says it is missing
        return False
    outputs = SlideOutputs(Path(out_dir if out_dir is not None else config.run.output_dir), entry.slide_id)
    needed = (outputs.tissue, outputs.patches, outputs.features_h5, outputs.named("blockmap.h5"),
              outputs.named("heatmap.png"), outputs.prediction)
    if not all(path.is_file() for path in needed):
        return False
    return all(reason is None for reason in stage_reasons(entry, config, out_dir, prints).values())


def describe_reasons(slide_id: str, reasons: dict[str, str | None]) -> str:
    """One line: which stages were reused and which recomputed, and why, and which files no
    longer asked for were removed."""
    names = STAGES + ("prediction", "export")
    reused = [stage for stage in STAGES if reasons.get(stage) is None]
    redone = [f"{stage} ({reasons[stage]})" for stage in names if reasons.get(stage) is not None]
    removed = [f"removed {reasons['removed']}"] if reasons.get("removed") else []
    if not redone:
        return f"{slide_id}: " + "; ".join(["reused all stages", *removed])
    parts = [f"recomputed {', '.join(redone)}"] + ([f"reused {', '.join(reused)}"] if reused else [])
    return f"{slide_id}: " + "; ".join(parts + removed)
