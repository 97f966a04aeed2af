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

from attnmap.io_utils import remove_stale_temporaries
from attnmap.stored import DamagedOutputError, stored_record
from attnmap.wsi.pipeline.config import PipelineConfig, SlideEntry
from attnmap.wsi.pipeline.fingerprint import StageFingerprints

STAGES = ("tissue", "patches", "features", "attention", "heatmap", "sampling")


@dataclass(frozen=True)
class SlideOutputs:
    """Every file `run_slide` writes for one slide."""

    root: Path
    slide_id: str

    @property
    def tissue(self) -> Path:
        return self.root / "tissue" / f"{self.slide_id}.json"

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


def features_reason(
    outputs: SlideOutputs, prints: StageFingerprints, config: PipelineConfig, n: int
) -> str | None:
    reason = prints.features.check(
        outputs.features_h5, accept_foreign=True, datasets=("features", "coords"), rows=n
    )
    if reason is None and config.features.save_pt:
        try:
            if stored_record(outputs.features_pt) is None:
                return "missing .pt"
        except DamagedOutputError as error:
            return f"damaged: {error}"
    return reason


def attention_reason(outputs: SlideOutputs, prints: StageFingerprints, n: int) -> str | None:
    return prints.attention.check(
        outputs.named("blockmap.h5"), datasets=("attention_scores", "coords"), rows=n
    )


def heatmap_reason(outputs: SlideOutputs, prints: StageFingerprints, config: PipelineConfig) -> str | None:
    """Why the heatmap files must be drawn again (PNG; TIFF, original and fine maps when asked)."""
    names = ["heatmap.png"]
    names += ["heatmap.tif"] if config.heatmap.tiff else []
    names += ["original.png"] if config.heatmap.save_original else []
    if config.heatmap.fine is not None:  # made by `attnmap.wsi.pipeline.fine_stage`
        reason = fine_maps_reason(outputs, prints)
        if reason is not None:
            return f"fine_maps.h5 {reason}"
        names += ["fine_gallery.png"] + (["heatmap_fine.tif"] if config.heatmap.tiff else [])
    for name in names:
        reason = prints.heatmap.check(outputs.named(name))
        if reason is not None:
            return f"{name} {reason}" if len(names) > 1 else reason
    return None


def fine_maps_reason(outputs: SlideOutputs, prints: StageFingerprints) -> str | None:
    """Why the fine-map file must be computed again (None: reuse it)."""
    from attnmap.wsi.heatmap.fine_store import FineMapFile

    return prints.fine.check(outputs.named("fine_maps.h5"), datasets=FineMapFile.DATASETS)


def sampling_reason(outputs: SlideOutputs, prints: StageFingerprints, config: PipelineConfig) -> str | None:
    """Why the top-k / bottom-k crops must be saved again (or, with none asked, removed)."""
    marker = outputs.named("samples.json")
    if config.sampling.top_k == 0 and config.sampling.bottom_k == 0:
        return "no samples asked: old ones removed" if marker.exists() else None
    reason = prints.sampling.check(marker)
    if reason is None:
        files = json.loads(marker.read_text()).get("files", [])
        if not all((outputs.heatmap_dir / name).is_file() for name in files):
            return "damaged: a sample crop is missing"
    return reason


def stage_reasons(
    entry: SlideEntry, config: PipelineConfig, out_dir: str | Path | None = None
) -> dict[str, str | None]:
    """For each stage (and ``prediction``), why it must run, or None when its outputs are reusable."""
    outputs = SlideOutputs(Path(out_dir if out_dir is not None else config.run.output_dir), entry.slide_id)
    prints = StageFingerprints(entry, config)
    reasons: dict[str, str | None] = {
        "tissue": prints.tissue.check(outputs.tissue),
        "patches": prints.patches.check(outputs.patches, accept_foreign=True, datasets=("coords",)),
    }
    n = stored_rows(outputs.patches, "coords") if reasons["patches"] is None else None
    if n is None:
        reasons.update(
            dict.fromkeys(("features", "attention", "heatmap", "sampling", "prediction"), "upstream")
        )
        return reasons
    reasons["features"] = features_reason(outputs, prints, config, n)
    reasons["attention"] = attention_reason(outputs, prints, n)
    reasons["heatmap"] = heatmap_reason(outputs, prints, config)
    reasons["sampling"] = sampling_reason(outputs, prints, config)
    reasons["prediction"] = prints.prediction.check(outputs.prediction)
    return reasons


def slide_complete(entry: SlideEntry, config: PipelineConfig, out_dir: str | Path | None = None) -> bool:
    """Whether every output of ``entry`` is intact and made with this configuration's fingerprints."""
    return all(reason is None for reason in stage_reasons(entry, config, out_dir).values())


def describe_reasons(slide_id: str, reasons: dict[str, str | None]) -> str:
    """One line: which stages were reused and which recomputed, and why."""
    names = STAGES + ("prediction",)
    reused = [stage for stage in STAGES if reasons.get(stage) is None]
    redone = [f"{stage} ({reasons[stage]})" for stage in names if reasons.get(stage) is not None]
    if not redone:
        return f"{slide_id}: reused all stages"
    parts = [f"recomputed {', '.join(redone)}"] + ([f"reused {', '.join(reused)}"] if reused else [])
    return f"{slide_id}: " + "; ".join(parts)
