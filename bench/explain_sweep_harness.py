"""The explain_cli_sweep harness: how a case is run and classified (see bench/explain_cli_sweep.py),
the checks on an `attnmap explain` output folder, and the comparison of two output folders."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from sweep_common import equal, normalise, run_cli

CLASSES = ("ok", "error", "crash", "stale", "ignored", "wrong", "outside")
SKIP = re.compile(r"^\.attnmap\.lock$|attnmap-tmp-")  # the lock and temporaries are not outputs


def call(argv: Sequence[str]) -> tuple[int, str, str]:
    """Run the CLI in this process: (exit status, stdout, stderr); 99: an exception escaped main."""
    return run_cli(argv)


def classify_exit(code: int, stderr: str) -> tuple[str, str]:
    """ok / error (exit 2, one ``attnmap: error:`` line naming something) / crash (anything else)."""
    lines = [line for line in stderr.splitlines() if line.strip() and "warning:" not in line]
    if "Traceback" in stderr or code == 99:
        return "crash", (lines[-1] if lines else "traceback")[:220]
    if code == 0:
        return "ok", ""
    if code == 2 and len(lines) == 1 and lines[0].startswith("attnmap: error:"):
        return "error", lines[0][len("attnmap: error: ") :][:220]
    return "crash", f"exit {code}, {len(lines)} line(s): " + " | ".join(lines)[:220]


# --- what a case wrote ------------------------------------------------------------------------------


def snapshot(root: Path, skip: Sequence[Path] = ()) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` (not under ``skip``): relative path -> (size, mtime_ns)."""
    found = {}
    skipped = [str(path.resolve()) for path in skip]
    for folder, dirs, files in os.walk(root, followlinks=False):
        if any(folder == s or folder.startswith(s + os.sep) for s in skipped):
            dirs[:] = []
            continue
        for name in files:
            path = Path(folder) / name
            with contextlib.suppress(OSError):
                stat = path.lstat()
                found[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns)
    return found


def written_outside(before: dict, after: dict, out: Path | None, root: Path) -> list[str]:
    """Files created or changed under ``root`` but outside the output folder ``out``."""
    inside = str(out.resolve().relative_to(root.resolve())) if out is not None else None
    changed = [name for name, stat in after.items() if before.get(name) != stat]
    return [
        name for name in changed if inside is None or not (name == inside or name.startswith(inside + os.sep))
    ]


# --- checks on an explain output folder -------------------------------------------------------------


def _sidecar(npy: Path) -> dict:
    with contextlib.suppress(OSError, ValueError):
        return json.loads(Path(str(npy) + ".json").read_text())
    return {}


def _png_text(path: Path) -> dict:
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        return dict(getattr(image, "text", {}))


def _map_inputs(record: dict) -> dict | None:
    """A record's fingerprint inputs without the drawing (what the map itself depends on)."""
    try:
        inputs = json.loads(record["attnmap_fingerprint_inputs"])
    except (KeyError, TypeError, ValueError):
        return None
    inputs.pop("drawing", None)
    return inputs


def check_explain_folder(out: Path, inputs: Sequence[Path] | None, n_methods: int | None) -> list[str]:
    """What is wrong in an explain output folder: maps not finite or of an odd size, pictures not
    readable, two inputs written to one name, an input without outputs, a picture whose map was
    rewritten by another run (its record no longer that of the map beside it)."""
    problems: list[str] = []
    if not out.is_dir():
        return [f"no output folder {out.name}"]
    images_of_npy: dict[str, str] = {}
    for npy in sorted(p for p in out.rglob("*.npy") if not SKIP.search(p.name)):
        try:
            heat = np.load(npy)
        except (OSError, ValueError) as error:
            problems.append(f"{npy.name} unreadable: {error}")
            continue
        if heat.ndim != 2 or min(heat.shape) < 1:
            problems.append(f"{npy.name} has shape {heat.shape}")
        elif not np.isfinite(heat).all():
            problems.append(f"{npy.name} holds NaN/inf")
        record = _sidecar(npy)
        if not record:
            problems.append(f"{npy.name} has no sidecar record")
        images_of_npy[npy.name] = record.get("image", "?")
    for png in sorted(p for p in out.rglob("*.png") if not SKIP.search(p.name)):
        try:
            text = _png_text(png)
        except Exception as error:  # noqa: BLE001
            problems.append(f"{png.name} unreadable: {error}")
            continue
        npy = png.with_suffix(".npy")
        if png.stem.endswith("_all_methods") or not npy.is_file():
            continue
        drawn, mapped = _map_inputs(text), _map_inputs(_sidecar(npy))
        if drawn is not None and mapped is not None and drawn != mapped:
            changed = sorted(k for k in set(drawn) | set(mapped) if drawn.get(k) != mapped.get(k))
            problems.append(f"stale: {png.name} drawn for other {'/'.join(changed)} than its map")
    if inputs is not None:
        given = {os.path.abspath(p) for p in inputs}  # a relative path, from the working folder
        recorded = {os.path.abspath(p) for p in images_of_npy.values()}
        missing = sorted(given - recorded)
        if missing:
            problems.append(
                f"no maps for {len(missing)} input(s): {', '.join(Path(m).name for m in missing)[:80]}"
            )
        foreign = sorted(recorded - given)
        if foreign:
            problems.append(f"maps of files not given: {', '.join(Path(m).name for m in foreign)[:80]}")
        if n_methods is not None and len(images_of_npy) != len(given) * n_methods:
            problems.append(f"{len(images_of_npy)} maps for {len(given)} input(s) x {n_methods} method(s)")
    return problems


# --- comparing two output folders --------------------------------------------------------------------


def _content(path: Path, folder: str) -> object:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path)
    if suffix == ".png":
        from PIL import Image

        with Image.open(path) as image:
            return np.asarray(image)
    if suffix == ".json":
        data = json.loads(path.read_text())
        for key in ("command", "attnmap_fingerprint", "attnmap_fingerprint_inputs", "parameters"):
            if isinstance(data, dict) and isinstance(data.get(key), str):
                with contextlib.suppress(ValueError):
                    data[key] = json.loads(data[key])
        return normalise(data, folder)
    if suffix == ".csv":
        return path.read_text().replace(folder, "<OUT>")
    return path.read_bytes()


def output_files(folder: Path) -> set[str]:
    return {
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and not SKIP.search(p.name) and p.name != "run_report.json"
    }


def diff_folders(one: Path, two: Path, ignore: Callable[[str], bool] = lambda name: False) -> list[str]:
    """Relative paths whose content differs, or that exist on one side only (``ignore``d names aside)."""
    left, right = output_files(one), output_files(two)
    differ = sorted(name for name in left ^ right if not ignore(name))
    for name in sorted(left & right):
        if ignore(name):
            continue
        try:
            if not equal(_content(one / name, str(one)), _content(two / name, str(two)), True):
                differ.append(name)
        except Exception as error:  # noqa: BLE001
            differ.append(f"{name} (unreadable: {error})")
    return differ


def _by_image(folder: Path) -> dict[tuple[str, str], str]:
    """(image as recorded, method) -> the output stem holding that map in ``folder``."""
    index = {}
    for sidecar in folder.glob("*.npy.json"):
        if SKIP.search(sidecar.name):
            continue
        try:
            record = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            continue
        suffix = f"_{record.get('method')}.npy.json"
        if sidecar.name.endswith(suffix):
            index[(record.get("image", "?"), record["method"])] = sidecar.name[: -len(suffix)]
    return index


def diff_explain_folders(rerun: Path, fresh: Path) -> tuple[list[str], int]:
    """Outputs of ``fresh`` that ``rerun`` lacks or holds otherwise, matched by (image, method): an
    output's name may differ between the two (a name an earlier run gave to another image is kept
    by it). Also returns how many outputs ``rerun`` holds beyond ``fresh``'s (other runs')."""
    mine, theirs = _by_image(rerun), _by_image(fresh)
    differ = []
    for (image, method), stem in sorted(theirs.items()):
        if (image, method) not in mine:
            differ.append(f"no {method} map of {Path(image).name}")
            continue
        own = mine[(image, method)]
        pairs = [
            (f"{own}_{method}.npy", f"{stem}_{method}.npy"),
            (f"{own}_{method}.npy.json", f"{stem}_{method}.npy.json"),
        ]
        pairs += [(f"{own}_{tail}.png", f"{stem}_{tail}.png") for tail in (method, "all_methods")]
        for left, right in pairs:
            if not (fresh / right).is_file():
                continue
            if not (rerun / left).is_file():
                differ.append(f"{left} missing")
            elif not equal(_content(rerun / left, str(rerun)), _content(fresh / right, str(fresh)), True):
                differ.append(left)
    return sorted(set(differ)), len(set(mine) - set(theirs))


# --- the record of a sweep ---------------------------------------------------------------------------


class Recorder:
    """Collects (class, section, case, detail) and prints one line per case."""

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.results: list[tuple[str, str, str, str]] = []
        self.section = ""
        self.last = time.perf_counter()

    def record(self, cls: str, name: str, detail: str, expect: str | None = None) -> str:
        if cls == "ok" and expect == "error":  # ran on an input it should refuse
            cls, detail = "wrong", f"accepted an input that should be refused {detail}".strip()
        surprise = expect is not None and cls != expect
        self.results.append((cls, self.section, name, detail))
        now = time.perf_counter()
        took, self.last = now - self.last, now
        print(f"{cls:8s} {'!' if surprise else ' '} {took:5.1f}s {name:48s} {detail[:200]}", flush=True)
        return cls


def fresh(folder: Path) -> Path:
    """An empty folder at ``folder`` (removed first when it exists)."""
    if folder.is_symlink() or folder.is_file():
        folder.unlink()
    elif folder.exists():
        shutil.rmtree(folder)
    return folder
