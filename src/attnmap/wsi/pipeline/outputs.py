"""Where `attnmap wsi run` puts each slide's files, and whether a slide is finished."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from attnmap.io_utils import TEMP_MARKER, remove_stale_temporaries
from attnmap.wsi.pipeline.config import PipelineConfig, SlideEntry

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
        """Delete what an interrupted run of this slide left half-written (only this slide's files)."""
        remove_stale_temporaries(self.heatmap_dir)
        for folder in (
            self.tissue.parent,
            self.patches.parent,
            self.features_h5.parent,
            self.features_pt.parent,
        ):
            if folder.is_dir():
                for leftover in folder.glob(f".{self.slide_id}{TEMP_MARKER}*"):
                    leftover.unlink(missing_ok=True)


def slide_complete(entry: SlideEntry, config: PipelineConfig, out_dir: str | Path | None = None) -> bool:
    """Whether every stage of ``entry`` is done (its prediction JSON, written last, exists)."""
    outputs = SlideOutputs(Path(out_dir if out_dir is not None else config.run.output_dir), entry.slide_id)
    return outputs.prediction.is_file() and outputs.named("heatmap.png").is_file()
