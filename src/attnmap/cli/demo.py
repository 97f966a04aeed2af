"""``attnmap demo``: run the bundled end-to-end demo."""

from __future__ import annotations

from pathlib import Path

import click

from attnmap.cli.options import out_option, quiet


@click.command()
@out_option("Folder for the demo's outputs.", default=Path("attnmap-demo"))
@click.option("--n-eval", type=click.IntRange(min=10), default=200, show_default=True,
              help="Held-out shape images in the evaluation table.")
def demo(out_dir: Path, n_eval: int) -> None:
    """Method grid, evaluation table and a slide heatmap from the bundled models, with an index.html."""
    from attnmap.demo import run_demo

    index = run_demo(out_dir, n_eval=n_eval, progress=not quiet())
    click.echo(f"attnmap demo written to {out_dir.resolve()}/ — open {index.resolve()}")
