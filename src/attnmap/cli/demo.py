"""``attnmap demo``: run the bundled end-to-end demo."""

from __future__ import annotations

from pathlib import Path

import click

from attnmap.cli.options import device_option, out_option, quiet, resolved_device


@click.command()
@out_option("Folder for the demo's outputs.", default=Path("attnmap-demo"))
@click.option("--n-eval", type=click.IntRange(min=10), default=200, show_default=True,
              help="Held-out shape images in the evaluation table.")
@device_option(help_text="auto (CUDA when available), cpu, cuda or cuda:N: where every demo model runs. "
               "The recorded figures were made on the CPU.")
def demo(out_dir: Path, n_eval: int, device: str) -> None:
    """Method grid, evaluation table and a slide heatmap from the bundled models, with an index.html."""
    from attnmap.demo import run_demo

    index = run_demo(out_dir, n_eval=n_eval, progress=not quiet(), device=resolved_device(device))
    click.echo(f"attnmap demo written to {out_dir.resolve()}/ — open {index.resolve()}")
