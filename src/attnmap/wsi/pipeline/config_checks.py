"""The checks of a `wsi run` configuration that need its files: slide CSV, model, encoder, ROI folder.

Why its own module: each check here stops a run while the configuration loads, before any slide is
touched, for a mistake that used to fail every slide one by one after minutes of work (a model that
does not take the encoder's features, fine maps with an encoder they cannot explain, weights for
another architecture, a missing ROI folder). Types and ranges are checked by the annotations of
`attnmap.wsi.pipeline.config`; these need the files.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from attnmap.errors import InputError

if TYPE_CHECKING:
    from attnmap.wsi.pipeline.config import FeaturesConfig, ModelConfig, PipelineConfig


def is_encoder_name(encoder: str) -> bool:
    """A preset or registered name ("resnet50_trunc", "timm:...", "attnmap:..."), not a file path."""
    return encoder == "resnet50_trunc" or ":" in encoder and not Path(encoder).is_file()


def check_config(config: PipelineConfig) -> None:
    """Raise `InputError` / `FileNotFoundError` for files that are missing (types and ranges are
    checked by the annotations when the configuration is built)."""
    if not config.slides.csv:
        raise InputError("slides.csv is required: a CSV listing the slides (column slide_path or slide_id)")
    csv_path = Path(config.slides.csv)
    takes = "list the slides in a CSV (column slide_path or slide_id), docs/wsi_config_example.yaml"
    if csv_path.is_dir():  # the folder of the slides: "not found" it is not
        raise InputError(f"slides.csv {csv_path} is a folder, not a CSV file: {takes}")
    if not csv_path.is_file() and any(mark in csv_path.name for mark in "*?["):
        raise InputError(f"slides.csv {csv_path} names no file (patterns are not expanded): {takes}")
    if not csv_path.is_file():
        raise FileNotFoundError(2, "slides.csv not found", config.slides.csv)
    if not config.model.checkpoint:
        raise InputError("model.checkpoint is required: a CLAM checkpoint (.pt state_dict)")
    if not Path(config.model.checkpoint).is_file():
        raise FileNotFoundError(2, "model.checkpoint not found", config.model.checkpoint)
    _check_model(config.model)
    encoder = config.features.encoder
    if encoder.startswith("torchscript:") and not Path(encoder[len("torchscript:") :]).is_file():
        raise FileNotFoundError(2, "features.encoder TorchScript file not found", encoder)
    if is_encoder_name(encoder) and not encoder.startswith("torchscript:"):
        from attnmap.wsi.encoders import PRESETS, known_encoder_name, registered_names

        if not known_encoder_name(encoder):
            raise InputError(
                f"features.encoder {encoder!r} is not an encoder attnmap knows: use one of "
                f"{', '.join(PRESETS + registered_names())}, 'timm:MODEL_NAME', 'hf:FOLDER' (a saved "
                "Hugging Face model) or an encoder file"
            )
    if not is_encoder_name(encoder) and not Path(encoder).is_file():
        raise InputError(
            f"features.encoder {encoder!r} is neither resnet50_trunc, a 'timm:NAME' or registered name, "
            "nor an existing encoder file"
        )
    if config.features.checkpoint and not Path(config.features.checkpoint).is_file():
        raise FileNotFoundError(2, "features.checkpoint not found", config.features.checkpoint)
    if config.features.checkpoint and (encoder.startswith("torchscript:") or not is_encoder_name(encoder)):
        raise InputError(
            f"features.checkpoint: the encoder file {encoder} carries its own weights; give "
            "features.checkpoint only with a named encoder (resnet50_trunc, timm:NAME, ...)"
        )
    _check_overlap_step(config)
    if config.heatmap.fine is not None:
        from attnmap.wsi.heatmap.fine import FineConfig

        FineConfig.from_mapping(config.heatmap.fine)
    check_roi_folder(config.patching.roi_annotations)
    _check_encoder(config)


class DefaultNormalisationWarning(UserWarning):
    """A timm architecture's weights come from a bare file, which says nothing of their normalisation."""


def _warn_default_normalisation(encoder: str, transform: object) -> None:
    """Say which mean and std the patches get: a state_dict file carries no preprocessing, so the
    architecture's timm default applies, which is not always what the weights were trained with
    (UNI's weights under ``vit_large_patch16_224`` expect ImageNet's, the default is 0.5)."""
    import warnings

    mean, std = getattr(transform, "mean", None), getattr(transform, "std", None)
    if mean is None or std is None:
        return

    def spelled(values: tuple[float, ...]) -> str:
        return "[" + ", ".join(f"{value:g}" for value in values) + "]"

    warnings.warn(
        f"features.encoder {encoder} with a checkpoint file: patches are normalised with the "
        f"architecture's default, mean {spelled(mean)}, std {spelled(std)}; if the weights were trained "
        "with others (UNI, Virchow: ImageNet's), give them as features.encoder_args.pretrained_cfg_overlay "
        "{mean: [...], std: [...]}",
        DefaultNormalisationWarning,
        stacklevel=2,
    )


class DenseOverlapWarning(UserWarning):
    """``heatmap.overlap`` asks for many overlapping patches per patch of the block grid."""


# Overlapping patches per block-grid patch above which a run is told what it asked for: 100 is
# overlap 0.9, where the overlap grid costs a hundred block grids (CLAM's template uses 0.5: 4).
DENSE_OVERLAP = 100


def _check_overlap_step(config: PipelineConfig) -> None:
    """`InputError` for a ``heatmap.overlap`` whose grid step, ``patch_size × (1 − overlap)``, is
    under one pixel; `DenseOverlapWarning` when the step leaves `DENSE_OVERLAP` or more patches to
    encode per patch of the block grid.

    Why: the step was rounded up to 1 px, a smaller overlap than asked for, silently, on a grid
    of patch_size² times the blockmap's patches (minutes for a 1024×768 slide); and a valid but
    dense overlap (0.99 with 256-px patches: a 2-px step) ran for hours without a word."""
    import warnings

    size, overlap = config.patching.patch_size, config.heatmap.overlap
    if overlap <= 0:
        return
    step = int(size * (1.0 - overlap))
    if step < 1:
        raise InputError(
            f"heatmap.overlap {overlap:g} leaves a grid step of {size * (1.0 - overlap):.2g} px for "
            f"{size}-px patches (patching.patch_size): use at most {1.0 - 1.0 / size:g}"
        )
    per_block = (size / step) ** 2
    if per_block >= DENSE_OVERLAP:
        warnings.warn(
            f"heatmap.overlap {overlap:g} is a {step}-px step for {size}-px patches: about "
            f"{per_block:,.0f} patches to encode per patch of the block grid, so the heatmap stage "
            f"takes about {per_block:,.0f} times the block grid's time",
            DenseOverlapWarning,
            stacklevel=2,
        )


def check_roi_folder(folder: str | None) -> None:
    """`InputError` unless ``patching.roi_annotations`` is unset or an existing folder (not a file)."""
    if folder is None:
        return
    if not Path(folder).exists():
        raise InputError(f"patching.roi_annotations: folder not found: {folder}")
    if not Path(folder).is_dir():
        raise InputError(
            f"patching.roi_annotations must be a folder of <slide id>.geojson|.json|.xml files, "
            f"got the file {folder}"
        )


def _check_encoder(config: PipelineConfig) -> None:
    """The encoder's weights against its architecture, its feature size against the model's, and
    the fine maps against the encoder.

    Why now: both used to fail every slide one by one, after its tissue and patches (the size) or
    after its heatmap (the fine maps). The encoder is only outlined (`encoder_outline`: no weights
    are loaded for a preset or timm architecture), so the check is cheap.
    """
    from attnmap.architecture_hints import argument_form

    with argument_form("features.encoder_args"):  # a checkpoint that does not fit: what to add there
        _encoder_checks(config)


def _encoder_checks(config: PipelineConfig) -> None:
    from attnmap.checkpoint import cached_clam
    from attnmap.vit.timm_folder import resolve_timm_folder

    f = config.features
    encoder = check_features_encoder(f)
    _, resolved_args, weights = resolve_timm_folder(f.encoder, f.encoder_args, f.checkpoint)  # a FOLDER's own
    if weights and f.encoder.startswith("timm:") and "pretrained_cfg_overlay" not in resolved_args:
        _warn_default_normalisation(f.encoder, encoder.transform)
    model = cached_clam(config.model.checkpoint, "cpu")[0]
    if encoder.feature_dim != model.embed_dim:
        raise InputError(
            f"features.encoder {f.encoder} gives {encoder.feature_dim}-d features but model.checkpoint "
            f"{config.model.checkpoint} expects {model.embed_dim}-d features"
        )
    if config.heatmap.fine is not None:
        from attnmap.wsi.heatmap.encoder_support import check_fine_encoder
        from attnmap.wsi.heatmap.fine import FineConfig

        try:
            check_fine_encoder(encoder.model, FineConfig.from_mapping(config.heatmap.fine).method)
        except InputError as error:
            raise InputError(f"heatmap.fine: {error} (features.encoder is {f.encoder})") from error


def check_features_encoder(f: FeaturesConfig) -> Any:
    """The encoder ``f`` asks for, outlined (an hf:FOLDER loaded into the run's cache), with its
    weights' names and shapes checked against it: `InputError` naming the setting (`setting`: a
    `wsi run` key or the `wsi features` option) for an encoder that cannot work. Why before any
    slide: such an encoder failed every slide alike, each after its tissue and patches."""
    from attnmap.vit.timm_folder import resolve_timm_folder
    from attnmap.wsi.encoders import encoder_outline
    from attnmap.wsi.hf_encoder import hf_folder
    from attnmap.wsi.setting_names import setting

    f.encoder_arguments()  # plain data, or one line now
    hf = hf_folder(f.encoder) is not None
    try:  # an hf:FOLDER has no outline without its weights: loaded into the run's cache instead
        encoder = f.load_encoder("cpu")[0] if hf else encoder_outline(f.encoder, f.input_size, f.encoder_args)
    except InputError as error:
        named = "" if f.encoder in str(error) else " " + f.encoder
        raise InputError(f"{setting('features.encoder')}{named}: {error}") from error
    _, _, weights = resolve_timm_folder(f.encoder, f.encoder_args, f.checkpoint)  # a FOLDER's own
    if weights and not hf:  # weights for another architecture failed each slide after its patches
        from attnmap.checkpoint import check_state_dict, load_state_dict

        try:
            state = load_state_dict(weights, lazy=True)  # names and shapes: nothing read
            check_state_dict(encoder.model, state, weights, ignore_unexpected=True)
        except InputError as error:
            key = "features.checkpoint" if f.checkpoint else "features.encoder"
            raise InputError(f"{setting(key)}: {error}") from error
    return encoder


def _check_model(model: ModelConfig) -> None:
    """Read the checkpoint now (cached for the run), so a corrupt or foreign file, or class names
    that do not match its classes, stop the run before any slide is touched. Without
    ``class_names``, those of the ``model.json`` `mil train` wrote beside the checkpoint are taken."""
    from attnmap.checkpoint import cached_clam

    try:
        clam, _ = cached_clam(model.checkpoint, "cpu")
    except InputError as error:
        named = str(model.checkpoint) in str(error)
        raise InputError(f"model.checkpoint{'' if named else ' ' + model.checkpoint}: {error}") from error
    if model.class_names and len(model.class_names) != clam.n_classes:
        raise InputError(
            f"model.class_names has {len(model.class_names)} name(s) but model.checkpoint "
            f"{model.checkpoint} has {clam.n_classes} classes"
        )
    if not model.class_names:  # what `mil train` recorded, read as `mil attention` reads it
        from attnmap.mil.fold_files import class_names_for

        model.class_names = class_names_for(Path(model.checkpoint), clam, setting="model.class_names") or []
