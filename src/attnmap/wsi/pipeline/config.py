"""The `attnmap wsi run` configuration: typed sections loaded from YAML, checked before any work.

Why typed dataclasses rather than a free dict (CLAM's way): a misspelt key in a YAML file should
stop the run at once with the key's name, not be ignored silently after hours of feature
extraction. Every section and key is listed here with its default; `docs/wsi_config_example.yaml`
documents them for users.
"""

from __future__ import annotations

import csv
import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnmap.errors import InputError


@dataclass
class SlidesConfig:
    """Which slides: a CSV with a ``slide_path`` or ``slide_id`` column (+ optional ``label``)."""

    csv: str = ""
    data_dir: str | None = None  # slide paths / ids are relative to this (default: the CSV's folder)
    extension: str = ""  # appended to a slide_id that has no suffix, e.g. ".svs"


@dataclass
class SegmentationConfig:
    """Tissue segmentation (CLAM's parameters; ``preset`` tcga | bwh_biopsy | bwh_resection wins)."""

    preset: str | None = None
    level: int | None = None
    sthresh: int = 8
    mthresh: int = 7
    close: int = 4
    use_otsu: bool = False
    a_t: int = 100
    a_h: int = 16
    max_n_holes: int = 8


@dataclass
class PatchingConfig:
    """The non-overlapping patch grid used for features and the blockmap."""

    patch_size: int = 256
    step: int | None = None  # default: patch_size
    level: int = 0
    contour_check: str = "four_pt"
    padding: bool = True


@dataclass
class FeaturesConfig:
    """The patch encoder: "resnet50_trunc", "timm:NAME", a registered name or an encoder file."""

    encoder: str = "resnet50_trunc"
    checkpoint: str | None = None
    input_size: int | None = None
    batch_size: int = 64
    num_workers: int = 0
    seed: int = 0
    save_pt: bool = True


@dataclass
class ModelConfig:
    """The CLAM (SB or MB) checkpoint giving predictions and attention."""

    checkpoint: str = ""
    class_names: list[str] = field(default_factory=list)


@dataclass
class HeatmapConfig:
    """How the heatmap is drawn (CLAM's visHeatmap arguments) and which files are written."""

    vis_level: int = -1
    cmap: str = "jet"
    alpha: float = 0.4
    percentiles: bool = True
    blur: bool = False
    binarize: bool = False
    threshold: float | None = None
    blank_canvas: bool = False
    use_tissue_mask: bool = True
    downscale: int = 1
    overlap: float = 0.0  # > 0: recompute attention on an overlapping grid, percentiles vs the blockmap
    save_original: bool = False  # also save the slide itself at the heatmap's level
    tiff: bool = False  # also write a pyramidal TIFF overlay
    tiff_level: int = 0
    fine: dict | None = None  # {method, top_k: 64 | all, mil_method}: attnmap.wsi.heatmap.fine.FineConfig


@dataclass
class SamplingConfig:
    """Top-k / bottom-k patches by attention, saved as PNG crops."""

    top_k: int = 15
    bottom_k: int = 15


@dataclass
class RunConfig:
    """Where and how: output folder, device (auto | cpu | cuda), workers, an existing Dask scheduler."""

    output_dir: str = "attnmap_results"
    device: str = "auto"
    workers: int = 1
    scheduler: str | None = None


@dataclass
class PipelineConfig:
    """The whole `attnmap wsi run` configuration (one section per stage)."""

    slides: SlidesConfig = field(default_factory=SlidesConfig)
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    patching: PatchingConfig = field(default_factory=PatchingConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    heatmap: HeatmapConfig = field(default_factory=HeatmapConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def stage_parameters(self, *sections: str) -> dict[str, Any]:
        """The parameters of some sections, for provenance records."""
        return {name: dataclasses.asdict(getattr(self, name)) for name in sections}


def config_from_dict(raw: dict[str, Any], base_dir: Path | None = None) -> PipelineConfig:
    """Build and check a `PipelineConfig`; relative paths are resolved against ``base_dir``."""
    if not isinstance(raw, dict):
        raise InputError("the configuration must be a mapping of sections (slides, model, ...)")
    sections = {item.name: item.type for item in dataclasses.fields(PipelineConfig)}
    unknown = sorted(set(raw) - set(sections))
    if unknown:
        raise InputError(
            f"unknown configuration section(s) {', '.join(unknown)}; known: {', '.join(sections)}"
        )
    built: dict[str, Any] = {}
    for item in dataclasses.fields(PipelineConfig):
        section_class = item.default_factory()  # type: ignore[misc]
        values = raw.get(item.name) or {}
        if not isinstance(values, dict):
            raise InputError(f"configuration section '{item.name}' must be a mapping of keys to values")
        known = {f.name for f in dataclasses.fields(section_class)}
        wrong = sorted(set(values) - known)
        if wrong:
            raise InputError(
                f"unknown key(s) {', '.join(wrong)} in section '{item.name}'; "
                f"known: {', '.join(sorted(known))}"
            )
        built[item.name] = dataclasses.replace(section_class, **values)
    config = PipelineConfig(**built)
    _resolve_paths(config, base_dir or Path.cwd())
    check_config(config)
    return config


def load_config(path: str | Path, **run_overrides: Any) -> PipelineConfig:
    """Read a YAML configuration file; ``run_overrides`` (e.g. workers=2) replace keys of ``run``."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "configuration file not found", str(path))
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise InputError(f"{path} is not valid YAML: {error}") from error
    config = config_from_dict(raw, base_dir=path.parent)
    overrides = {key: value for key, value in run_overrides.items() if value is not None}
    if overrides:
        config.run = dataclasses.replace(config.run, **overrides)
        check_config(config)
    return config


def _resolve(value: str | None, base_dir: Path) -> str | None:
    if value is None or value == "":
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base_dir / path))


def _is_encoder_name(encoder: str) -> bool:
    """A preset or registered name ("resnet50_trunc", "timm:...", "attnmap:..."), not a file path."""
    return encoder == "resnet50_trunc" or ":" in encoder and not Path(encoder).is_file()


def _resolve_paths(config: PipelineConfig, base_dir: Path) -> None:
    config.slides.csv = _resolve(config.slides.csv, base_dir) or ""
    config.slides.data_dir = _resolve(config.slides.data_dir, base_dir)
    config.model.checkpoint = _resolve(config.model.checkpoint, base_dir) or ""
    config.features.checkpoint = _resolve(config.features.checkpoint, base_dir)
    encoder = config.features.encoder
    if not _is_encoder_name(encoder):  # a file: relative to the config like every other path
        config.features.encoder = _resolve(encoder, base_dir) or encoder
    config.run.output_dir = _resolve(config.run.output_dir, base_dir) or config.run.output_dir


def check_config(config: PipelineConfig) -> None:
    """Raise `InputError` / `FileNotFoundError` for values that would fail later (files, ranges)."""
    if not config.slides.csv:
        raise InputError("slides.csv is required: a CSV listing the slides (column slide_path or slide_id)")
    if not Path(config.slides.csv).is_file():
        raise FileNotFoundError(2, "slides.csv not found", config.slides.csv)
    if not config.model.checkpoint:
        raise InputError("model.checkpoint is required: a CLAM checkpoint (.pt state_dict)")
    if not Path(config.model.checkpoint).is_file():
        raise FileNotFoundError(2, "model.checkpoint not found", config.model.checkpoint)
    encoder = config.features.encoder
    if not _is_encoder_name(encoder) and not Path(encoder).is_file():
        raise InputError(
            f"features.encoder {encoder!r} is neither resnet50_trunc, a 'timm:NAME' or registered name, "
            "nor an existing encoder file"
        )
    if config.features.checkpoint and not Path(config.features.checkpoint).is_file():
        raise FileNotFoundError(2, "features.checkpoint not found", config.features.checkpoint)
    patching = config.patching
    if patching.patch_size < 1 or (patching.step is not None and patching.step < 1) or patching.level < 0:
        raise InputError("patching.patch_size and patching.step must be >= 1 and patching.level >= 0")
    if config.features.batch_size < 1 or config.features.num_workers < 0:
        raise InputError("features.batch_size must be >= 1 and features.num_workers >= 0")
    if not 0.0 <= config.heatmap.overlap < 1.0:
        raise InputError(f"heatmap.overlap must be in [0, 1), got {config.heatmap.overlap}")
    if config.heatmap.fine is not None:
        from attnmap.wsi.heatmap.fine import FineConfig

        FineConfig.from_mapping(config.heatmap.fine)
    if not 0.0 <= config.heatmap.alpha <= 1.0:
        raise InputError(f"heatmap.alpha must be in [0, 1], got {config.heatmap.alpha}")
    if config.sampling.top_k < 0 or config.sampling.bottom_k < 0:
        raise InputError("sampling.top_k and sampling.bottom_k must be >= 0")
    if config.run.device not in ("auto", "cpu", "cuda") and not config.run.device.startswith("cuda:"):
        raise InputError(f"run.device must be auto, cpu, cuda or cuda:N, got {config.run.device!r}")
    if config.run.scheduler is None and (not isinstance(config.run.workers, int) or config.run.workers < 1):
        raise InputError(f"run.workers must be a positive integer, got {config.run.workers!r}")


@dataclass(frozen=True)
class SlideEntry:
    """One row of the slide list: where the slide is, its id (output names), its label if known."""

    path: str
    slide_id: str
    label: str = ""


def read_slide_list(config: PipelineConfig) -> list[SlideEntry]:
    """The slides named in ``slides.csv``, checked to exist (all missing ones named at once)."""
    csv_path = Path(config.slides.csv)
    base = Path(config.slides.data_dir) if config.slides.data_dir else csv_path.parent
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise InputError(f"{csv_path} lists no slides")
    columns = set(rows[0])
    if not columns & {"slide_path", "slide_id"}:
        raise InputError(
            f"{csv_path} needs a 'slide_path' or 'slide_id' column, has {', '.join(sorted(columns))}"
        )
    entries: list[SlideEntry] = []
    missing: list[str] = []
    for row in rows:
        name = (row.get("slide_path") or row.get("slide_id") or "").strip()
        if not name:
            raise InputError(f"{csv_path} has a row without a slide: {row}")
        path = Path(name).expanduser()
        if not path.suffix and config.slides.extension:
            path = path.with_name(path.name + config.slides.extension)
        path = path if path.is_absolute() else base / path
        slide_id = (row.get("slide_id") or "").strip() or path.stem
        if not path.is_file():
            missing.append(str(path))
        entries.append(SlideEntry(str(path), slide_id, (row.get("label") or "").strip()))
    if missing:
        raise FileNotFoundError(2, f"{len(missing)} slide(s) in {csv_path} not found, e.g.", missing[0])
    counts = Counter(entry.slide_id for entry in entries)
    duplicates = sorted(slide_id for slide_id, count in counts.items() if count > 1)
    if duplicates:
        raise InputError(f"{csv_path} lists slide id(s) more than once: {', '.join(duplicates)}")
    return entries
