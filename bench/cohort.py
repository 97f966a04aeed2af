"""Cohort throughput of `attnmap wsi run`: slides per minute with 1 and with 2 workers, as a ratio.

Usage: ``python bench/cohort.py [--slides 16] [--size 2048] [--encoder attnmap:tiny] [--workers 1 2]
[--threads 1]``

Writes a synthetic cohort (`attnmap.data.synthetic_slides`) and a CLAM_SB with seeded random weights
in a temporary folder, then runs the whole pipeline (segmentation → features → attention → heatmap
PNG → top/bottom patches) once per worker count, each into a fresh output folder. One worker runs
in this process (as `wsi run --workers 1` does: no cluster); more run on a LocalCluster. What a
worker does once (process start, imports, loading the encoder and the CLAM model into the caches
the stages use, one slide's first-time costs) is timed apart as "start"; the slides after it are
what scales.

``--threads N`` pins torch to N threads per worker in every run, so the ratio measures how slides
scale over processes (ideal = worker count, given that many free cores); without it each run uses
the default, cores ÷ workers, and the ratio is what a user sees on this machine (a 1-worker run
already uses every core). The baseline is the first worker count, measured in the same process.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import write_run_config


def _warm_up(config_path: str) -> None:
    """What a worker does once, whatever its number of slides: imports, the models loaded into the
    per-process caches the pipeline's stages use (the same keys, so they are hits later), and the
    first slide's one-time costs (imports and first calls inside the stages, the memory the
    allocator grows into), paid here on the cohort's first slide written to a scratch folder. Without
    it a fresh worker pays them inside the timed slides and the in-process run, whose process has
    run slides before, does not."""
    import shutil
    import tempfile

    from attnmap.wsi.pipeline.config import load_config, read_slide_list
    from attnmap.wsi.pipeline.run import run_slide

    config = load_config(config_path)
    scratch = tempfile.mkdtemp(prefix="attnmap_bench_warm_up_")
    try:
        run_slide(read_slide_list(config)[0], config, out_dir=scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process so far, all threads."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def time_run(
    config_path: Path, workers: int, out_dir: Path, threads: int | None, dask_defaults: bool = False
) -> tuple[float, float, int, float, float, float]:
    """(start seconds, processing seconds, slides done, mean seconds per slide in its worker, CPU
    seconds per slide in the processes that ran slides, CPU seconds per slide of this process while
    the slides ran on other processes: the scheduler and client, 0 with one worker, which runs here)
    for one cohort run on ``workers`` workers.
    CPU seconds hardly depend on what else runs on the machine, so they compare the work a slide
    costs in process and in a worker even where the wall clock is noisy.

    More than one worker: the cluster `run_tasks` starts (`attnmap.parallel_dask.local_cluster`),
    started here to separate its fixed cost (process spawn, imports) from the per-slide throughput.
    ``dask_defaults``: start it with Dask's default cluster settings instead of attnmap's
    (`attnmap.parallel_dask.LOCAL_CLUSTER_CONFIG`), to show what those settings change.
    """
    import contextlib
    import os
    from unittest import mock

    from distributed import Client

    from attnmap import parallel_dask
    from attnmap.wsi.pipeline.cohort import run_cohort
    from attnmap.wsi.pipeline.config import load_config

    config = load_config(config_path, output_dir=str(out_dir))
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        scheduler = None
        if workers > 1:
            if dask_defaults:
                stack.enter_context(mock.patch.object(parallel_dask, "LOCAL_CLUSTER_CONFIG", {}))
                # Dask's nanny leaves its worker environment in os.environ, which later workers inherit
                stack.enter_context(mock.patch.dict(os.environ))
            cluster = stack.enter_context(parallel_dask.local_cluster(workers))
            client = stack.enter_context(Client(cluster))
            client.run(_warm_up, str(config_path))
            scheduler = cluster.scheduler_address
        else:
            _warm_up(str(config_path))
        def cpu() -> float:
            return sum(client.run(_cpu_seconds).values()) if scheduler is not None else _cpu_seconds()

        cpu_before, driver_before, started = cpu(), _cpu_seconds(), time.perf_counter()
        report = run_cohort(config, workers=1, scheduler=scheduler, progress=False, threads=threads)
        finished = time.perf_counter()
        cpu_used = cpu() - cpu_before
        driver_used = _cpu_seconds() - driver_before if scheduler is not None else 0.0
    if report.failed:
        raise SystemExit(f"{len(report.failed)} slide(s) failed: {report.failed[0].message}")
    done = max(1, len(report.done))
    per_slide = sum(entry.seconds or 0.0 for entry in report.done) / done
    seconds = finished - started
    return started - start, seconds, len(report.done), per_slide, cpu_used / done, driver_used / done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slides", type=int, default=16)
    parser.add_argument("--size", type=int, default=2048, help="slide width = height, level 0")
    parser.add_argument("--encoder", default="attnmap:tiny")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads per worker (default: cores ÷ workers)"
    )
    parser.add_argument("--repeats", type=int, default=1, help="alternating runs of each; the fastest counts")
    parser.add_argument(
        "--compare-dask-defaults", action="store_true",
        help="also time each multi-worker run with Dask's default cluster settings",
    )
    args = parser.parse_args()
    import os

    from attnmap.threads import available_cores

    per_worker = "cores ÷ workers" if args.threads is None else str(args.threads)
    print(
        f"{args.slides} slides of {args.size}², {available_cores()} core(s), "
        f"torch threads per worker: {per_worker}"
    )
    with tempfile.TemporaryDirectory(prefix="attnmap_bench_cohort_") as folder:
        root = Path(folder)
        config_path = write_run_config(
            root, args.encoder, n_slides=args.slides, size=args.size, batch_size=64,
            sections={"sampling": {"top_k": 5, "bottom_k": 5}},
        )
        runs = [(workers, False) for workers in args.workers]
        if args.compare_dask_defaults:
            runs += [(workers, True) for workers in args.workers if workers > 1]
        rates: dict[tuple[int, bool], float] = {}
        for repeat in range(args.repeats):  # alternating, so that a change in load hits every run alike
            for workers, defaults in runs:
                startup, seconds, done, per_slide, cpu, driver = time_run(
                    config_path, workers, root / f"out_{workers}_{defaults}_{repeat}", args.threads, defaults
                )
                rate = done / seconds * 60.0
                rates[workers, defaults] = max(rate, rates.get((workers, defaults), 0.0))
                label = " (Dask's default cluster settings)" if defaults else ""
                print(
                    f"{workers} worker(s){label}: start {startup:.1f} s, "
                    f"then {done} slides in {seconds:.1f} s = {rate:.1f} slides/min "
                    f"({per_slide:.2f} s per slide inside a worker, CPU {cpu:.3f} s per slide"
                    + (f", scheduler and client {driver:.3f}" if workers > 1 else "")
                    + "), "
                    f"load average {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
        baseline = rates[args.workers[0], False]
        for workers, defaults in runs[1:]:
            label = " with Dask's default cluster settings" if defaults else ""
            print(
                f"ratio {workers} vs {args.workers[0]} worker(s){label}: "
                f"{rates[workers, defaults] / baseline:.2f}x (ideal {workers / args.workers[0]:.0f}x), "
                f"best of {args.repeats}"
            )

if __name__ == "__main__":
    main()
