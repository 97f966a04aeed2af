"""Help, the version and usage errors answer without importing torch and friends (seconds each);
a command line that parses still imports torch before its command runs; the lazy packages
(`attnmap.wsi` and its sub-packages) still expose every public name.

Each case runs in a fresh interpreter, since this test process has long imported everything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from attnmap import __version__
from attnmap.cli.main import SUBCOMMANDS

HEAVY = (
    "torch", "torchvision", "timm", "transformers", "numpy", "cv2", "openslide", "tifffile", "h5py",
    "dask", "distributed",
)
MARKER = "@@attnmap-test-modules@@"

# Runs the command line as the console script does, then prints its exit status and which of
# HEAVY it imported on a marked last line of stdout.
_RUN_CLI = f"""
import json, sys
from attnmap.cli.main import main
try:
    main(sys.argv[1:])
    code = 0
except SystemExit as done:
    code = done.code if isinstance(done.code, int) else int(done.code is not None)
sys.stdout.flush()
sys.stderr.flush()
print({MARKER!r} + json.dumps({{"code": code, "loaded": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}


def run_cli(*args: str) -> tuple[int, str, str, list[str]]:
    """(exit status, stdout, stderr, HEAVY modules imported) of ``attnmap ARGS`` in a new process."""
    done = subprocess.run(
        [sys.executable, "-c", _RUN_CLI, *args], capture_output=True, text=True, timeout=300, env=_env()
    )
    out, _, last = done.stdout.rstrip("\n").rpartition("\n")
    if not last.startswith(MARKER):  # the marked line is missing only if the process died
        out, last = done.stdout, ""
    assert last.startswith(MARKER), f"exit {done.returncode}: {done.stderr}"
    result = json.loads(last[len(MARKER):])
    return result["code"], out, done.stderr, result["loaded"]


HELP_CASES = [
    ((), [*SUBCOMMANDS, "--version", "--debug", "--quiet"]),
    (("explain",), ["IMAGES...", "--model", "--method", "--readout", "[cls|patch_mean|cls_and_patch_mean]",
                    "--workers"]),
    (("methods",), ["List the explanation methods"]),
    (("demo",), ["--n-eval", "--device"]),
    (("evaluate",), ["--mil-checkpoint", "--pointing-tolerance", "--methods"]),
    (("train-shapes",), ["--threads", "--epochs"]),
    (("mil",), ["train", "attention"]),
    (("mil", "train"), ["FEATURES_DIR", "LABELS_CSV", "[clam_sb|clam_mb|abmil]"]),
    (("wsi",), ["segment", "patch", "features", "heatmap", "run", "geojson", "evaluate"]),
    (("wsi", "segment"), ["SLIDES...", "--preset [tcga|bwh_biopsy|bwh_resection]", "--seg-level",
                          "--channel [saturation|darkness]"]),
    (("wsi", "features"), ["--precision [float32|bfloat16|float16]",
                           "--contour-check [four_pt|four_pt_hard|center|basic]", "--encoder-arg"]),
    (("wsi", "heatmap"), ["SLIDE", "--scores", "--tiff"]),
    (("wsi", "run"), ["CONFIG_YAML", "--force"]),
    (("wsi", "geojson"), ["SCORES", "--tissue-file"]),
    (("view",), ["PATH", "--port", "--export"]),
]


@pytest.mark.parametrize(
    ("command", "expected"), HELP_CASES, ids=[" ".join(command) or "attnmap" for command, _ in HELP_CASES]
)
def test_help_answers_without_importing_torch(command: tuple[str, ...], expected: list[str]) -> None:
    code, out, err, loaded = run_cli(*command, "--help")
    assert code == 0, err
    assert out.startswith(" ".join(("Usage: attnmap", *command)) + " ")
    for text in expected:
        assert text in out, text
    assert loaded == [], f"`attnmap {' '.join(command)} --help` imported {loaded}"


def test_short_help_and_version_answer_without_importing_torch() -> None:
    code, out, _, loaded = run_cli("wsi", "run", "-h")
    assert code == 0 and "CONFIG_YAML" in out and loaded == []
    code, out, _, loaded = run_cli("--version")
    assert code == 0 and out.strip() == f"attnmap, version {__version__}" and loaded == []


USAGE_ERRORS = [
    (("explain", "--bogus"), "No such option '--bogus'"),
    (("explain",), "Missing argument 'IMAGES...'"),
    (("explain", "a.png", "--model", "timm:vit_tiny_patch16_224", "--readout", "bad"),
     "'bad' is not one of 'cls', 'patch_mean', 'cls_and_patch_mean'"),
    (("wsi", "run"), "Missing argument 'CONFIG_YAML'"),
    (("wsi", "segment", "--preset", "nope", "."),
     "'nope' is not one of 'tcga', 'bwh_biopsy', 'bwh_resection'"),
    (("mil", "train", "--bogus"), "No such option '--bogus'"),
    (("evaluate", "--data", "nope"), "Invalid value for '--data'"),
    (("nosuch",), "No such command 'nosuch'"),
]


@pytest.mark.parametrize(("command", "message"), USAGE_ERRORS, ids=[" ".join(c) for c, _ in USAGE_ERRORS])
def test_usage_errors_answer_without_importing_torch(command: tuple[str, ...], message: str) -> None:
    code, out, err, loaded = run_cli(*command)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("attnmap: error: ") and message in lines[0], err
    assert loaded == [], f"`attnmap {' '.join(command)}` imported {loaded}"


def test_a_command_line_that_parses_imports_torch_before_the_command_runs(tmp_path: Path) -> None:
    """`attnmap wsi geojson` needs no torch itself: torch is there because the command line parsed
    (`attnmap.cli.main.TorchContext`), and the command then says what is wrong with its input."""
    code, _, err, loaded = run_cli("wsi", "geojson", str(tmp_path / "missing_blockmap.h5"), "-o",
                                   str(tmp_path / "out.geojson"))
    assert code == 2 and "missing_blockmap.h5" in err
    assert "torch" in loaded


_PUBLIC_NAMES = """
import sys
import attnmap.wsi, attnmap.wsi.heatmap, attnmap.wsi.pipeline
heavy = [m for m in ("torch", "cv2", "dask", "distributed") if m in sys.modules]
assert heavy == [], heavy
for package in (attnmap.wsi, attnmap.wsi.heatmap, attnmap.wsi.pipeline):
    for name in package.__all__:
        assert name in dir(package), (package.__name__, name)
        assert getattr(package, name) is not None, (package.__name__, name)
from attnmap.wsi import PRESETS, HeatmapStyle, PipelineConfig, open_slide, run_cohort
import attnmap.wsi.parameters as parameters, attnmap.wsi.slide as slide, attnmap.wsi.tissue as tissue
assert open_slide is slide.open_slide and attnmap.wsi.open_slide is open_slide
assert PRESETS is tissue.PRESETS is parameters.PRESETS and tissue.DEFAULTS is parameters.DEFAULTS
assert HeatmapStyle is attnmap.wsi.heatmap.style.HeatmapStyle
assert PipelineConfig is attnmap.wsi.pipeline.config.PipelineConfig
assert run_cohort is attnmap.wsi.pipeline.cohort.run_cohort
assert attnmap.wsi.features.PRECISIONS.keys() == set(parameters.PRECISION_NAMES)
try:
    attnmap.wsi.no_such_name
except AttributeError as error:
    assert "no_such_name" in str(error)
else:
    raise AssertionError("attnmap.wsi.no_such_name")
import attnmap, attnmap.vit
from attnmap.vit.readout import TOKEN_READOUTS
from attnmap.readout_names import TOKEN_READOUTS as NAMES
assert TOKEN_READOUTS is NAMES
built_in = {"attention", "rollout", "attn_gradcam", "grad_rollout", "transformer_attribution", "lrp",
            "lrp_rollout", "lrp_attention"}
assert built_in <= set(attnmap.vit.registry.methods()), attnmap.vit.registry.methods()
assert built_in <= set(attnmap.methods())
print("ok")
"""


def test_the_lazy_packages_expose_every_public_name() -> None:
    """`attnmap.wsi` and its sub-packages import their names on first use; importing them loads none
    of the heavy modules, and every name of ``__all__`` is listed and found as before."""
    done = subprocess.run([sys.executable, "-c", _PUBLIC_NAMES], capture_output=True, text=True,
                          timeout=300, env=_env())
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_methods_imported_from_the_registry_module_include_the_built_in_ones() -> None:
    """Importing `attnmap.vit.registry` alone (as `attnmap.explain` and the CLI do) registers them."""
    script = "from attnmap.vit.registry import methods; print(sorted(methods()))"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=_env()
    )
    assert done.returncode == 0, done.stderr
    assert "'rollout'" in done.stdout and "'transformer_attribution'" in done.stdout
