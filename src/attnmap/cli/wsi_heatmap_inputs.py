"""What `attnmap wsi heatmap` reads beside its scores: the patch size its inputs record, the slide
they were made from, and the scale signed scores are drawn on.

Why apart from `attnmap.cli.wsi`: that module stays under its size limit; this is the heatmap
command's own input checking, with no other user.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from attnmap.errors import InputError


def recorded_patch_size(read: Any, path: Path, opened: Any, given: int | None) -> int | None:
    """``read(path, level_downsamples)``: the level-0 patch size the file records. A record that is
    no size (`attnmap.wsi.patch_geometry`'s refusal): the ``--patch-size`` given replaces it, as in
    the viewer; none given, the refusal says to give one."""
    try:
        return read(path, opened.level_downsamples)
    except InputError as error:
        if given is None:
            raise InputError(f"{error}: give --patch-size (level-0 pixels)") from None
        return None



def check_inputs_made_from(slide: Path, *sources: Path | None) -> None:
    """`InputError` when a scores, features or tissue file records being made from a slide whose
    bytes differ from ``slide``'s (`attnmap.wsi.pipeline.stage_files.check_made_from`)."""
    from attnmap.wsi.pipeline.stage_files import check_made_from, output_record

    for source in sources:
        if source is not None:
            check_made_from(source, output_record(source), slide)


def signed_defaults(
    style: Any, files: dict[str, Any], values: Any, method: str
) -> tuple[Any, dict[str, Any]]:
    """Signed scores (`is_signed`: LRP, gradient × input, or a real negative tail) drawn as the
    viewer draws them, centred on 0 in a diverging colour map, unless --scale or --cmap says
    otherwise: on jet between percentiles their zero was an arbitrary colour."""
    import dataclasses

    import click

    from attnmap.render.scale import DEFAULT_CMAPS, is_signed

    context = click.get_current_context()
    given = {name for name in ("files__scale", "style__cmap")
             if context.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT}
    if "files__scale" in given or not is_signed(values, method):
        return style, files
    if "style__cmap" not in given:
        style = dataclasses.replace(style, cmap=DEFAULT_CMAPS["diverging"])
    return style, {**files, "scale": "diverging"}
