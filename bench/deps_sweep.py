"""Does attnmap work at the dependency versions pyproject.toml declares? One throw-away virtual
environment per point, with one dependency pinned (its declared floor or a notable release) and
everything else resolved by pip, then a subset of the test suite (the HF / timm adapters and the
conformance tests by default) run in it.

    python bench/deps_sweep.py                     # every point below
    python bench/deps_sweep.py --only transformers # the points of one dependency
    python bench/deps_sweep.py --list              # the points, nothing run

torch and its CUDA libraries (about 4.5 GB installed) are installed once, pinned to the build on
this machine's disk (DEVELOPERS.md), in a base environment; each point's environment reaches it
through a ``.pth`` file, after its own site-packages, so every other package is the point's own.
pip never removes a package outside the environment it installs into, and a constraints file
holds torch and torchvision at that build. Everything lives under one temporary folder, removed at
the end (``--keep`` leaves it). The first row is the newest resolution (nothing pinned): its test
time is the baseline the other rows' times are given against.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TORCH = ("torch==2.14.1", "torchvision==0.29.1")

# (dependency, pinned requirement or None for the newest resolution, why this point)
POINTS: list[tuple[str, str | None, str]] = [
    ("(none)", None, "newest resolution: the baseline"),
    ("transformers", "transformers==4.40.0", "the floor declared before 2026-12-02"),
    ("transformers", "transformers==4.46.3", "last 4.46"),
    ("transformers", "transformers==4.57.6", "last 4.x"),
    ("transformers", "transformers==5.12.1", "below the floor: fails"),
    ("transformers", "transformers==5.24.0", "the floor"),
    ("timm", "timm==1.0.3", "first 1.0.x on PyPI (1.0.0-1.0.2 were never published)"),
    ("timm", "timm==1.0.9", "notable 1.0.x"),
    ("timm", "timm==1.0.30", "below the floor: fails"),
    ("timm", "timm==1.0.31", "the floor"),
    ("numpy", "numpy==1.26.4", "last 1.x"),
    ("pydantic", "pydantic==2.6.4", "below the floor: fails"),
    ("tifffile", "tifffile==2023.8.30", "below the floor: fails"),
    # every other declared floor at once
    (
        "(floors)",
        "numpy==1.24.4 pillow==10.0.1 h5py==3.9.0 tifffile==2023.9.26 pydantic==2.7.4 scipy==1.10.1",
        "floors",
    ),
]

# The adapters and conformance tests, plus the tests that exercise the pinned dependency's own use.
CORE_TESTS = [
    "tests/test_vit_hf_variants.py",
    "tests/test_vit_cross_implementation.py",
    "tests/test_hf_encoders.py",
    "tests/test_vit_conformance.py",
    "tests/test_mil_conformance.py",
]
EXTRA_TESTS = {
    "timm": ["tests/test_vit_support_matrix.py", "tests/test_encoder_files.py"],
    "numpy": ["tests/test_render.py"],
    "pillow": ["tests/test_image_modes.py"],
    "h5py": ["tests/test_mil_bags.py"],
    "tifffile": ["tests/test_wsi_tiff.py"],
    "pydantic": ["tests/test_wsi_config.py"],
    "scipy": ["tests/test_evaluate_metrics.py"],
}
KEY_PACKAGES = ("transformers", "timm", "numpy", "pillow", "h5py", "tifffile", "pydantic", "scipy")


def run(cmd: list[str], log: Path, timeout: float) -> int:
    with log.open("a") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        try:
            done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, cwd=REPO)
            return done.returncode
        except subprocess.TimeoutExpired:
            out.write(f"timed out after {timeout:.0f} s\n")
            return 124


def make_base(root: Path) -> Path:
    """A venv holding torch and torchvision (without torchvision's numpy and pillow): its site-packages."""
    base = root / "torch-base"
    subprocess.run([sys.executable, "-m", "venv", str(base)], check=True)
    pip = [str(base / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, TORCH[0]], check=True)
    subprocess.run([*pip, "--no-deps", TORCH[1]], check=True)
    return site_packages(base)


def site_packages(env: Path) -> Path:
    found = sorted((env / "lib").glob("python3*/site-packages"))
    if not found:
        raise SystemExit(f"{env}: no site-packages")
    return found[0]


def versions(python: Path) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json\n"
        f"names = {list(KEY_PACKAGES)!r}\n"
        "out = {}\n"
        "for n in names:\n"
        "    try: out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: out[n] = '-'\n"
        "print(json.dumps(out))"
    )
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    import json

    return json.loads(done.stdout) if done.returncode == 0 else {}


def counts(text: str) -> dict[str, int]:
    """pytest's last summary line read as {passed, failed, skipped, error}."""
    lines = [line for line in text.splitlines() if re.search(r"\d+ (passed|failed|error)", line)]
    found = {"passed": 0, "failed": 0, "skipped": 0, "error": 0}
    for number, word in re.findall(r"(\d+) (passed|failed|skipped|errors?)", lines[-1] if lines else ""):
        found["error" if word.startswith("error") else word] = int(number)
    return found


def one_point(root: Path, base_site: Path, index: int, dep: str, pin: str | None, args) -> dict:
    env = root / f"env{index:02d}"
    log = root / f"env{index:02d}.log"
    row: dict = {"dep": dep, "pin": pin or "-", "log": log}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    (site_packages(env) / "_attnmap_torch_base.pth").write_text(f"{base_site}\n")
    constraints = root / "torch-constraints.txt"
    constraints.write_text("\n".join(TORCH) + "\n")
    python = env / "bin" / "python"
    cmd = [str(python), "-m", "pip", "install", "-q", "-c", str(constraints), "-e", f"{REPO}[dev,dist,hf]"]
    code = run([*cmd, *(pin.split() if pin else [])], log, args.install_timeout)
    row["install_s"] = time.perf_counter() - started
    row["versions"] = versions(python)
    if code != 0:
        row["result"] = f"install failed (pip {code})"
        return row
    named = [re.split(r"[=<>!~]", requirement)[0] for requirement in (pin or "").split()]
    tests = [*CORE_TESTS, *(test for name in named for test in EXTRA_TESTS.get(name, []))]
    started = time.perf_counter()
    pytest = [str(python), "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider"]
    pytest += ["-x"] if args.first_failure else []
    test_log = root / f"env{index:02d}.pytest.log"
    run([*pytest, *tests], test_log, args.test_timeout)
    row["test_s"] = time.perf_counter() - started
    text = test_log.read_text()
    row.update(counts(text))
    row["failures"] = [line for line in text.splitlines() if line.startswith(("FAILED", "ERROR"))]
    row["result"] = "ok" if row["failed"] == row["error"] == 0 and row["passed"] else "failures"
    if not args.keep:
        shutil.rmtree(env, ignore_errors=True)
    return row


def table(rows: list[dict], baseline_s: float | None) -> str:
    head = "| dependency | pinned | resolved | passed | failed | errors | skipped | tests time ÷ baseline |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        shown = [re.split(r"[=<>!~]", r)[0] for r in row["pin"].split() if r != "-"] or [row["dep"]]
        if row["dep"] == "(none)":
            shown = ["transformers", "timm", "numpy"]
        resolved = ", ".join(f"{k} {row['versions'].get(k.lower(), '?')}" for k in shown)
        ratio = f"{row['test_s'] / baseline_s:.2f}" if baseline_s and "test_s" in row else "-"
        if "passed" not in row:
            lines.append(f"| {row['dep']} | {row['pin']} | {resolved} | {row['result']} | | | | - |")
            continue
        lines.append(
            f"| {row['dep']} | {row['pin']} | {resolved} | {row['passed']} | {row['failed']} "
            f"| {row['error']} | {row['skipped']} | {ratio} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only", help="run only the points of this dependency (the baseline row always runs)"
    )
    parser.add_argument(
        "--pin",
        action="append",
        default=[],
        help="run this point instead of the list: 'timm==1.0.15', or several",
    )
    parser.add_argument("--no-baseline", action="store_true", help="leave out the newest-resolution row")
    parser.add_argument("--list", action="store_true", help="print the points and exit")
    parser.add_argument("--keep", action="store_true", help="keep the environments and logs")
    parser.add_argument(
        "--first-failure", action="store_true", help="stop each test run at its first failure"
    )
    parser.add_argument(
        "--base", help="an existing venv holding torch==2.14.1 and torchvision==0.29.1 to reuse"
    )
    parser.add_argument("--install-timeout", type=float, default=900)
    parser.add_argument("--test-timeout", type=float, default=600)
    args = parser.parse_args()
    points = [p for p in POINTS if p[1] is None or not args.only or p[0] == args.only]
    points = points if not args.pin else points[:1]
    points += [(re.split(r"[=<>!~]", pin)[0], pin, "given") for pin in args.pin]
    points = points[1:] if args.no_baseline else points
    if args.list:
        for dep, pin, why in points:
            print(f"{dep:14s} {pin or '-':24s} {why}")
        return
    root = Path(tempfile.mkdtemp(prefix="attnmap-deps-"))
    print(f"environments under {root}", flush=True)
    rows = []
    try:
        base_site = site_packages(Path(args.base)) if args.base else make_base(root)
        for index, (dep, pin, _why) in enumerate(points):
            row = one_point(root, base_site, index, dep, pin, args)
            rows.append(row)
            took = f"install {row['install_s']:.0f} s" + (
                f", tests {row['test_s']:.0f} s" if "test_s" in row else ""
            )
            print(f"{dep} {pin or '-'}: {row['result']} ({took}); log {row['log']}", flush=True)
            for line in row.get("failures", [])[:10]:
                print("   ", line, flush=True)
    finally:
        baseline = next((r.get("test_s") for r in rows if r["pin"] == "-"), None)
        if rows:
            print()
            print(table(rows, baseline))
            if baseline:
                print(f"\nbaseline (newest resolution) tests time: {baseline:.0f} s")
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
