"""Why a folder holds nothing `attnmap view` can show, said as what it holds and what to give instead.

Why apart from `sources`: each kind of folder a user tries (one slide's folder of a run, a run's
``heatmaps/``, an export, `attnmap demo`'s scores, the outputs of the single-stage commands) has its
own hint, and the slide-finding rules read better without them.
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

from attnmap.errors import InputError


def refuse_empty_folder(path: Path, purpose: str) -> NoReturn:
    """`InputError` naming what ``path`` (a folder that is no run and holds none) holds instead."""
    where = path.resolve()  # `attnmap view .` from inside a run's folders
    if where.parent.name == "heatmaps":  # run/heatmaps/<id>: the natural thing to try, never a run
        raise InputError(
            f"{path} is one slide's folder of a `wsi run`; view the run: attnmap view {where.parent.parent}"
        )
    if where.name == "heatmaps" and (
        (where.parent / "run_report.json").is_file()
        or any((child / f"{child.name}_blockmap.h5").is_file() for child in where.iterdir())
    ):
        raise InputError(
            f"{path} holds the slide folders of a `wsi run`; view the run: attnmap view {where.parent}"
        )
    from attnmap.view.export import is_export

    if is_export(path):  # `attnmap view --export`'s folder: a page, not a run to serve again
        raise InputError(
            f"{path} is a viewer export (`attnmap view --export`): open {path / 'index.html'} in a "
            f"browser, or serve the folder: python -m http.server -d {path}"
        )
    from attnmap.mil.bags import ATTENTION_SUFFIX

    # scores without the run layout (`attnmap demo`'s folder, `mil attention -o`): the slide must be named
    loose = sorted([*path.glob("*_blockmap.h5"), *path.glob(f"*{ATTENTION_SUFFIX}")])
    if loose:
        more = f" (and {len(loose) - 1} more)" if len(loose) > 1 else ""
        raise InputError(
            f"{path} holds scores files but no `wsi run` layout: view one with its slide, "
            f"attnmap view SLIDE --scores {loose[0]}{more}"
        )
    pictures = sorted(path.glob("*_heatmap.png"))
    if pictures:  # `wsi heatmap -o path`: pictures only (with --model it keeps no scores at all)
        raise InputError(
            f"nothing to {purpose} in {path}: it holds heatmap pictures ({pictures[0].name}) of `wsi "
            "heatmap`, not the scores they were drawn from; give those with their slide: attnmap view "
            "SLIDE --scores FILE (for a model's attention, `mil attention` writes <id>_attention.h5)"
        )
    stages = [name for name in ("tissue", "patches", "features") if (path / name).is_dir()]
    if stages:  # `wsi segment|patch|features -o path`: the run layout up to the features, no scores
        raise InputError(
            f"nothing to {purpose} in {path}: it holds {', '.join(f'{name}/' for name in stages)} of "
            "`wsi segment|patch|features` but no scores to draw; `wsi run` with run.output_dir "
            f"{path} reuses them and adds heatmaps/, or give `mil attention`'s <id>_attention.h5 "
            "with its slide: attnmap view SLIDE --scores FILE"
        )
    raise InputError(
        f"nothing to view in {path}: expected a `wsi run` output folder "
        "(heatmaps/<id>/<id>_blockmap.h5), "
        "a folder of such folders, or a slide file with --scores"
    )
