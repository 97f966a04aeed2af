"""The `attnmap wsi run` configuration: typed sections loaded from YAML, checked before any work.

Why typed dataclasses rather than a free dict (CLAM's way): a misspelt key in a YAML file should
stop the run at once with the key's name, not be ignored silently after hours of feature
extraction. Every section and key is listed here with its default; `docs/wsi_config_example.yaml`
documents them for users.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from annotated_types import Ge, MinLen

from attnmap.errors import InputError
from attnmap.validation import STRICT, Check, validate_mapping
from attnmap.wsi.heatmap.style import HeatmapStyle
from attnmap.wsi.parameters import MAX_KERNEL
from attnmap.wsi.pipeline.config_checks import check_config, check_roi_folder, is_encoder_name
from attnmap.wsi.pipeline.config_values import (
    ChannelName,
    ContourCheck,
    Device,
    Kernel,
    NonNegative,
    OddPositive,
    Positive,
    Precision,
    PresetName,
    SchedulerAddress,
    check_distinct,
)
from attnmap.wsi.pipeline.slide_list import SlideEntry, read_slide_list

__all__ = [
    "PipelineConfig", "SlideEntry", "check_config", "check_roi_folder", "config_from_dict", "load_config",
    "read_slide_list",
]


@dataclass
class SlidesConfig:
    """Which slides: a CSV with a ``slide_path`` or ``slide_id`` column (+ optional ``label``)."""

    __pydantic_config__: ClassVar[dict] = STRICT

    csv: str = ""
    data_dir: str | None = None  # slide paths / ids are relative to this (default: the CSV's folder)
    extension: str = ""  # appended to a slide_id that has no suffix, e.g. ".svs"


@dataclass
class SegmentationConfig:
    """Tissue segmentation (CLAM's parameters). Unset values come from ``preset``, else CLAM's
    defaults (`attnmap.wsi.parameters.DEFAULTS`); a value that disagrees with the preset is an error."""

    __pydantic_config__: ClassVar[dict] = STRICT

    preset: PresetName | None = field(
        default=None,
        metadata={"help": "CLAM's parameter preset: sets the values below (one that disagrees is an error)."},
    )
    level: NonNegative | None = field(
        default=None, metadata={"help": "Level to segment at (default: best for downsample 64)."}
    )
    channel: ChannelName | None = field(
        default=None,
        metadata={"help": "Image thresholded: saturation (CLAM's) or darkness below the glass (greyscale "
                  "scans); unset: saturation, or darkness with a warning on a slide without colour."},
    )
    sthresh: NonNegative | None = field(
        default=None, metadata={"help": "Threshold on the channel (saturation or darkness, 0-255)."}
    )
    mthresh: OddPositive | None = field(
        default=None, metadata={"help": f"Median blur kernel (odd, at most {MAX_KERNEL})."}
    )
    close: Kernel | None = field(
        default=None,
        metadata={"help": f"Morphological closing kernel (0: none; at most {MAX_KERNEL})."},
    )
    use_otsu: bool | None = field(default=None, metadata={"help": "Otsu threshold instead of sthresh."})
    a_t: Annotated[float, Ge(0)] | None = field(
        default=None, metadata={"help": "Minimum tissue area, in 512×512 level-0 patches."}
    )
    a_h: Annotated[float, Ge(0)] | None = field(
        default=None, metadata={"help": "Minimum hole area, in 512×512 level-0 patches."}
    )
    max_n_holes: NonNegative | None = field(
        default=None, metadata={"help": "Holes kept per tissue region."}
    )

    def resolved(self) -> dict[str, Any]:
        """The parameters segmentation will use (preset and defaults applied, conflicts refused)."""
        from attnmap.wsi.tissue import resolve_parameters  # OpenCV: not for `wsi run --help`

        given = dataclasses.asdict(self)
        del given["preset"], given["level"]
        return resolve_parameters(self.preset, given)


@dataclass
class PatchingConfig:
    """The non-overlapping patch grid used for features and the blockmap."""

    __pydantic_config__: ClassVar[dict] = STRICT

    patch_size: Positive = field(default=256, metadata={"help": "Patch size in pixels of the patch level."})
    step: Positive | None = field(default=None, metadata={"help": "Grid step (default: patch size)."})
    level: NonNegative = field(default=0, metadata={"help": "Slide level the patches are read at."})
    contour_check: ContourCheck = field(
        default="four_pt", metadata={"help": "Which points of a patch must lie in tissue."}
    )
    padding: bool = field(default=True, metadata={"help": "Keep patches that reach past the slide edge."})
    roi_annotations: str | None = field(
        default=None,
        metadata={"help": "Folder of <slide id>.geojson|.xml annotations: keep patches centred inside."},
    )


@dataclass
class FeaturesConfig:
    """The patch encoder: "resnet50_trunc", "timm:NAME", "hf:FOLDER", a registered name or an encoder file."""

    __pydantic_config__: ClassVar[dict] = STRICT

    encoder: str = field(
        default="resnet50_trunc",
        metadata={"help": "resnet50_trunc, timm:MODEL_NAME, timm:FOLDER, hf:FOLDER (a Hugging Face model "
                  "saved with save_pretrained), a registered name (attnmap:tiny, attnmap:patch-vit), "
                  "torchscript:PATH, or a weights file (timm checkpoint, torchvision ResNet50)."},
    )
    checkpoint: str | None = field(
        default=None, metadata={"help": "Encoder weights (without: seeded random weights, for tests)."}
    )
    input_size: Annotated[int, Ge(8)] | None = field(
        default=None, metadata={"help": "Resize patches to this size (default: the encoder's)."}
    )
    encoder_args: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "Arguments of a timm architecture, e.g. {init_values: 1.0e-5} (UNI), "
                  "{mlp_layer: SwiGLUPacked, act_layer: silu, reg_tokens: 4} (Virchow2); for hf:FOLDER "
                  "only readout: cls (default), pooler, patch_mean, cls_and_patch_mean or embeds."},
    )
    batch_size: Positive = field(default=64, metadata={"help": "Patches per forward pass."})
    num_workers: NonNegative = field(default=0, metadata={"help": "Patch-reading processes."})
    seed: int = field(default=0, metadata={"help": "Seed of random encoder weights."})
    precision: Precision = field(
        default="float32",
        metadata={"help": "The encoder's compute precision (bfloat16, float16: torch.autocast); "
                  "stored features are float32."},
    )
    cpu_graph: bool = field(
        default=True,
        metadata={"help": "On CPU in float32, run a convolutional encoder as a checked oneDNN graph "
                  "(features equal up to round-off; off: the eager model)."},
    )
    save_pt: bool = field(default=True, metadata={"help": "Also write pt_files/<slide>.pt."})

    def encoder_arguments(self) -> str:
        """``encoder_args`` as canonical JSON (sorted keys), the spelling the features' fingerprint
        holds. `InputError` for a value that is not plain data (checked when the config loads)."""
        try:
            return json.dumps(self.encoder_args, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise InputError(
                f"features.encoder_args must hold plain values (numbers, strings, lists): {error}"
            ) from None

    def load_encoder(self, device: str) -> tuple[Any, str]:
        """(the patch encoder on ``device``, sha256 of its weights), loaded once per process."""
        from attnmap.model_cache import cached_encoder

        return cached_encoder(
            self.encoder, self.checkpoint, self.input_size, self.seed, device, self.encoder_args
        )


@dataclass
class ModelConfig:
    """The CLAM (SB or MB) checkpoint giving predictions and attention."""

    __pydantic_config__: ClassVar[dict] = STRICT

    checkpoint: str = ""
    class_names: Annotated[list[str], Check(check_distinct)] = field(default_factory=list)


@dataclass(frozen=True)
class HeatmapConfig(HeatmapStyle):
    """How the heatmap is drawn (`HeatmapStyle`, CLAM's visHeatmap arguments) and which files are
    written. ``overlap`` > 0 also recomputes attention on an overlapping grid (percentiles against
    the blockmap), as CLAM's heatmap script does."""

    save_original: bool = field(
        default=False, metadata={"help": "Also save the slide at the heatmap's level."}
    )
    tiff: bool = field(default=False, metadata={"help": "Also write a pyramidal TIFF overlay."})
    tiff_level: NonNegative = field(
        default=0, metadata={"help": "Slide level of the TIFF's full resolution."}
    )

    scale: Literal["robust", "minmax", "clam", "diverging"] = field(
        default="robust",
        metadata={"help": "robust: linear between the 1st and 99th percentile; minmax; clam: CLAM's "
                  "colours exactly (percentile ranks, or raw / 100 with percentiles off); diverging: "
                  "signed scores (LRP, gradient x input), 0 in the middle, clipped at the 99th "
                  "percentile of |score|."},
    )
    legend: bool = field(default=True, metadata={"help": "Title and colour bar around the heatmap PNG."})
    fine: dict | None = field(
        default=None,
        metadata={"help": "Fine maps inside patches: {method, top_k: 64 | all, mil_method} "
                  "(attnmap.wsi.heatmap.fine.FineConfig)."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.tiff and self.tiff_level != 0:  # as threshold without binarize: never dropped silently
            raise InputError(
                f"tiff_level {self.tiff_level} acts only with tiff (the level of the TIFF overlay): turn "
                "tiff on, or leave tiff_level out"
            )

    @property
    def style(self) -> HeatmapStyle:
        """The drawing options alone."""
        names = [item.name for item in dataclasses.fields(HeatmapStyle)]
        return HeatmapStyle(**{name: getattr(self, name) for name in names})


@dataclass
class SamplingConfig:
    """Top-k / bottom-k patches by attention, saved as PNG crops."""

    __pydantic_config__: ClassVar[dict] = STRICT

    top_k: NonNegative = 15
    bottom_k: NonNegative = 15


@dataclass
class ExportConfig:
    """Interchange files per slide: QuPath GeoJSON of the patch scores (+ tissue contours)."""

    __pydantic_config__: ClassVar[dict] = STRICT

    geojson: bool = False
    geojson_tissue: bool = True


@dataclass
class RunConfig:
    """Where and how: output folder, device (auto | cpu | cuda), workers, an existing Dask scheduler."""

    __pydantic_config__: ClassVar[dict] = STRICT

    output_dir: Annotated[str, MinLen(1)] = "attnmap_results"
    device: Device = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N."})
    workers: Positive = field(
        default=1, metadata={"help": "Slides at once (1: in this process; N > 1: a local Dask cluster)."}
    )
    scheduler: SchedulerAddress | None = field(
        default=None, metadata={"help": "Address of an existing Dask scheduler (tcp://host:port)."}
    )


@dataclass
class PipelineConfig:
    """The whole `attnmap wsi run` configuration (one section per stage)."""

    __pydantic_config__: ClassVar[dict] = STRICT

    slides: SlidesConfig = field(default_factory=SlidesConfig)
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    patching: PatchingConfig = field(default_factory=PatchingConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    heatmap: HeatmapConfig = field(default_factory=HeatmapConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def stage_parameters(self, *sections: str) -> dict[str, Any]:
        """The parameters of some sections (or single keys, ``model.checkpoint``), for provenance records.

        Why keys: a record should hold only what made its file; a file kept on a rerun that changed
        another key of the section (e.g. ``model.class_names`` for the sampled crops) would
        otherwise claim the old value."""
        record: dict[str, Any] = {}
        for name in sections:
            section, _, key = name.partition(".")
            values = dataclasses.asdict(getattr(self, section))
            record.setdefault(section, {}).update({key: values[key]} if key else values)
        return record


def config_from_dict(raw: dict[str, Any], base_dir: Path | None = None) -> PipelineConfig:
    """Build and check a `PipelineConfig`; relative paths are resolved against ``base_dir``.

    Every key is validated (types strictly, ranges, choices) before any work, and a wrong one is
    an `InputError` naming its dotted key, e.g. ``patching.patch_size``.
    """
    if not isinstance(raw, dict):
        raise InputError("the configuration must be a mapping of sections (slides, model, ...)")
    sections = [item.name for item in dataclasses.fields(PipelineConfig)]
    unknown = sorted(str(name) for name in set(raw) - set(sections))
    if unknown:
        raise InputError(
            f"unknown configuration section(s) {', '.join(unknown)}; known: {', '.join(sections)}"
        )
    cleaned = {name: {} if values is None else values for name, values in raw.items()}  # empty section
    config = validate_mapping(PipelineConfig, cleaned)
    config.segmentation.resolved()  # a preset that disagrees with a given value fails now
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
        with open(path, encoding="utf-8") as handle:  # (a stream: errors name the file)
            raw = yaml.load(handle, Loader=_unique_key_loader()) or {}  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as error:
        raise InputError(f"{path} is not valid YAML: {' '.join(str(error).split())}") from error
    except UnicodeDecodeError as error:
        raise InputError(f"{path} is not UTF-8 text (byte {error.start})") from error
    overrides = {key: value for key, value in run_overrides.items() if value is not None}
    if overrides and isinstance(raw, dict):
        raw = {**raw, "run": {**(raw.get("run") or {}), **overrides}}
    # absolute: the run's records name its files wherever the run is read later
    return config_from_dict(raw, base_dir=path.resolve().parent)


def _unique_key_loader() -> type:
    """A YAML SafeLoader that refuses a key given twice in one mapping.

    Why: PyYAML keeps the last of two equal keys, so a second ``patching:`` section (or a key
    repeated in one) silently dropped the first one's values.
    """
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> dict:
            seen: set = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if not isinstance(key, (str, int, float, bool)) or key == "<<":
                    continue  # merge keys and unhashable keys: PyYAML's own rules
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} given twice in one mapping", key_node.start_mark
                    )
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def _resolve(value: str | None, base_dir: Path) -> str | None:
    if value is None or value == "":
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base_dir / path))


def _resolve_paths(config: PipelineConfig, base_dir: Path) -> None:
    config.slides.csv = _resolve(config.slides.csv, base_dir) or ""
    config.slides.data_dir = _resolve(config.slides.data_dir, base_dir)
    config.model.checkpoint = _resolve(config.model.checkpoint, base_dir) or ""
    config.features.checkpoint = _resolve(config.features.checkpoint, base_dir)
    config.patching.roi_annotations = _resolve(config.patching.roi_annotations, base_dir)
    encoder = config.features.encoder
    if encoder.startswith("torchscript:"):  # an explicitly trusted TorchScript file
        config.features.encoder = "torchscript:" + (_resolve(encoder[len("torchscript:") :], base_dir) or "")
    elif not is_encoder_name(encoder):  # a file: relative to the config like every other path
        config.features.encoder = _resolve(encoder, base_dir) or encoder
    else:  # timm:FOLDER, hf:FOLDER: relative to the config like every other path
        for prefix in ("timm:", "hf:"):
            folder = encoder[len(prefix) :]
            if encoder.startswith(prefix) and (base_dir / folder / "config.json").is_file():
                config.features.encoder = prefix + (_resolve(folder, base_dir) or "")
    config.run.output_dir = _resolve(config.run.output_dir, base_dir) or config.run.output_dir
