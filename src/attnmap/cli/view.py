"""``attnmap view``: open slides and their heatmaps in the browser, or export them as a static folder."""

from __future__ import annotations

from pathlib import Path

import click

MAX_LISTED = 10
"""Slides that cannot be shown named one per line on start; the page lists them all."""


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--scores",
    "scores",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Scores file(s) (_blockmap.h5 layout, or a _fine_maps.h5) when PATH is a slide; repeat for several.",
)
@click.option(
    "--annotations",
    type=click.Path(path_type=Path),
    default=None,
    help="Annotations (QuPath GeoJSON or ASAP XML) of the slide given as PATH, or a folder of "
    "<slide id>.geojson|.xml (what a run folder needs).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    help="Port on 127.0.0.1 (0: any free port).",
)
@click.option("--no-browser", is_flag=True, help="Do not open a browser tab.")
@click.option(
    "--export",
    "export_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Write a static folder (page + Deep Zoom tiles) instead of serving.",
)
@click.option(
    "--cache-mb",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Bound of the server's tile cache.",
)
def view(
    path: Path,
    scores: tuple[Path, ...],
    annotations: Path | None,
    port: int,
    no_browser: bool,
    export_dir: Path | None,
    cache_mb: int,
) -> None:
    """Show PATH (a `wsi run` output folder, a folder of them, or a slide with --scores) in the browser.

    \b
    What it serves, on 127.0.0.1 only, until Ctrl+C:
      - the slide as Deep Zoom tiles (OpenSeadragon), with a slide list for a cohort;
      - one heatmap layer per score set (attention and every scores_<method> of the
        blockmap), with its colour bar, the score and rank under the cursor, and a
        gallery of the top patches; fine maps (<id>_fine_maps.h5) drawn inside the
        patches when zoomed in; tissue contours and annotations as outlines.
    \b
    When a run is rerun into PATH while the viewer is open, the slides are read again
    and an open page reloads itself within seconds, so it never keeps the old run. A run
    whose files do not read yet is reported in one line until they do.
    """
    from attnmap.cli.options import quiet
    from attnmap.view import ViewerContent, export_static, find_slides, make_server

    def load():
        return find_slides(path, list(scores), annotations)

    found = load()
    unfinished = [item.slide_id for item in found.unshown if item.unfinished]
    if unfinished:  # one line: the slides an interrupted (or running) run has not finished
        shown = ", ".join(unfinished[:5]) + (
            f" and {len(unfinished) - 5} more" if len(unfinished) > 5 else ""
        )
        click.echo(f"attnmap view: not shown (no blockmap or prediction file yet): {shown}", err=True)
    refused = [item for item in found.unshown if not item.unfinished]
    for item in refused[:MAX_LISTED]:  # a line each: failed in the run, or files that do not read
        click.echo(f"attnmap view: not shown: {item.slide_id}: {item.reason}", err=True)
    if len(refused) > MAX_LISTED:
        click.echo(
            f"attnmap view: not shown: {len(refused) - MAX_LISTED} more slide(s), listed in the page",
            err=True,
        )
    if annotations is not None and annotations.is_dir():  # a misnamed file: its slide shows no outlines
        from attnmap.wsi.annotations import unmatched_annotation_files

        ids = [slide.slide_id for slide in [*found.slides, *found.unshown]]
        unmatched = unmatched_annotation_files(annotations, ids)
        if unmatched:
            more = len(unmatched) - 5
            shown = ", ".join(unmatched[:5]) + (f" and {more} more" if more > 0 else "")
            click.echo(f"attnmap view: annotation file(s) matching no slide, not shown: {shown}", err=True)
    slides = found

    if export_dir is not None:
        content = ViewerContent(slides, cache_bytes=cache_mb << 20)
        page = export_static(content, export_dir, progress=not quiet())
        click.echo(f"wrote {page} (open it in a browser, or serve the folder)")
        return
    content = ViewerContent(slides, cache_bytes=cache_mb << 20, reload=load, watch=[path])
    server = make_server(content, port)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    from attnmap.stop_signals import Terminated

    try:  # from the line saying how to stop it: a Ctrl+C right after it is the same stop
        click.echo(f"attnmap view: {len(content.slides)} slide(s) at {url} (Ctrl+C to stop)")
        if not no_browser:
            import webbrowser

            webbrowser.open(url)
        server.serve_forever()
    except Terminated:  # SIGTERM, SIGHUP: exits 128 + the signal, as every command (a script reads why)
        raise
    except KeyboardInterrupt:  # Ctrl+C: the way the server is meant to be stopped
        click.echo("stopped")
    finally:
        server.server_close()
        content.close()
