"""``attnmap wsi``: tissue segmentation, patching, features and heatmaps for whole slides, and ``run``.

Every command writes the layout of `attnmap.wsi.pipeline` (``tissue/``, ``patches/``,
``features/h5_files``, ``heatmaps/``) under ``--out``, so the single-stage commands and
``wsi run`` reuse each other's outputs, and finished stages are skipped on a rerun. Options are
generated from the configuration dataclasses, so each default lives once. Heavy imports happen
inside the commands. Nothing ever prompts.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from attnmap.cli.options import dataclass_options, from_options, quiet
from attnmap.wsi.pipeline.config import RunConfig


@click.group()
def wsi() -> None:
    """Whole slides: tissue, patches, features, heatmaps, and `run` for a cohort from a YAML config."""


@wsi.command()
@click.argument("config_yaml", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out", "-o", "--out-dir", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Output folder (default: run.output_dir of the config).",
)
@click.option("--force", is_flag=True, help="Recompute every stage of every slide.")
@dataclass_options(RunConfig, "run", skip=("output_dir",), unset=True)
def run(config_yaml: Path, out_dir: Path | None, force: bool, **options: Any) -> None:
    """Slide → tissue → patches → features → CLAM attention → heatmaps for every slide of a YAML config.

    Options given here replace the config's `run` keys. Resumable: rerun the same command after
    an interruption or a change; each stage output records a fingerprint of what made it, and
    exactly the stages whose fingerprint changed (and those after them) are recomputed, one line
    per slide saying which and why. A failing slide is recorded in run_report.json and does not
    stop the others (exit status 1)."""
    from tqdm.auto import tqdm

    from attnmap.wsi.pipeline.cohort import failure_lines, run_cohort, slide_summaries
    from attnmap.wsi.pipeline.config import load_config, read_slide_list

    overrides = from_options(RunConfig, "run", options, drop_unset=True)
    if out_dir is not None:
        overrides["output_dir"] = str(out_dir.resolve())
    config = load_config(config_yaml, **overrides)
    report = run_cohort(config, progress=not quiet(), force=force)
    out = Path(config.run.output_dir)
    for line in slide_summaries(report, read_slide_list(config, check_slides=False)):
        click.echo(line)
    click.echo(
        f"{len(report.done)} done, {len(report.skipped)} already done, {len(report.failed)} failed; "
        f"predictions: {out / 'predictions.csv'}; report: {out / 'run_report.json'}"
    )
    if report.failed:
        for line in failure_lines(report):
            tqdm.write(line, file=sys.stderr)
        raise SystemExit(1)  # click returns (not raises) ctx.exit codes when not standalone


def _add_commands() -> None:
    """The commands kept in their own modules: single stages, heatmap, QuPath GeoJSON and annotations."""
    from attnmap.cli.wsi_heatmap import heatmap
    from attnmap.cli.wsi_interchange import evaluate_command, geojson_command
    from attnmap.cli.wsi_stages import features, patch, segment

    for command in (segment, patch, features, heatmap, geojson_command, evaluate_command):
        wsi.add_command(command)


_add_commands()
