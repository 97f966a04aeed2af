"""One command line: ``--out``/``-o`` wherever a command writes, ``--device`` where it computes,
global ``--debug``/``--quiet`` anywhere, defaults shared with the API and the config, and every
configuration error as one line naming its dotted key (exit 2), before any work."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import click
import pytest
import yaml
from cli_runner import run_cli
from synthetic_slide_files import write_pipeline_setup
from tqdm import tqdm

from attnmap.cli.main import cli, hoist_global_flags, main

WRITERS = [
    ("explain",),
    ("evaluate",),
    ("train-shapes",),
    ("demo",),
    ("mil", "train"),
    ("mil", "attention"),
    ("wsi", "segment"),
    ("wsi", "patch"),
    ("wsi", "features"),
    ("wsi", "heatmap"),
    ("wsi", "run"),
]
COMPUTERS = [
    ("explain",),
    ("evaluate",),
    ("demo",),
    ("mil", "train"),
    ("mil", "attention"),
    ("wsi", "features"),
    ("wsi", "heatmap"),
]


def _command(path: tuple[str, ...]) -> click.Command:
    context = click.Context(cli)
    command: click.Command = cli
    for name in path:
        command = command.get_command(context, name)  # type: ignore[attr-defined]
        assert command is not None, path
    return command


def _option(command: click.Command, flag: str) -> click.Option | None:
    return next((p for p in command.params if isinstance(p, click.Option) and flag in p.opts), None)




@pytest.mark.parametrize("path", WRITERS, ids=" ".join)
def test_every_writing_command_takes_out_and_o(path: tuple[str, ...]) -> None:
    option = _option(_command(path), "--out")
    assert option is not None and "-o" in option.opts
    assert not [p for p in _command(path).params if isinstance(p, click.Option) and p.name == "quiet"]


@pytest.mark.parametrize("path", COMPUTERS, ids=" ".join)
def test_every_computing_command_takes_device_auto(path: tuple[str, ...]) -> None:
    option = _option(_command(path), "--device")
    assert option is not None and option.default == "auto"


def test_train_shapes_takes_a_device_defaulting_to_the_bundled_weights_cpu() -> None:
    # the bundled weights were made on the CPU: the recipe's default reproduces them there
    option = _option(_command(("train-shapes",)), "--device")
    assert option is not None and option.default == "cpu"


def test_run_device_overrides_the_configs_which_defaults_to_auto() -> None:
    from attnmap.wsi.pipeline.config import RunConfig

    assert _option(_command(("wsi", "run")), "--device").default is None
    assert RunConfig().device == "auto"


def test_cli_defaults_come_from_the_dataclasses() -> None:
    from attnmap.wsi.heatmap import HeatmapStyle
    from attnmap.wsi.pipeline.config import PatchingConfig

    heatmap = _command(("wsi", "heatmap"))
    assert _option(heatmap, "--alpha").default == HeatmapStyle().alpha
    assert _option(heatmap, "--cmap").default == HeatmapStyle().cmap
    assert _option(heatmap, "--canvas-color").nargs == 3
    assert _option(_command(("wsi", "patch")), "--patch-size").default == PatchingConfig().patch_size
    sthresh = _option(_command(("wsi", "segment")), "--sthresh")
    assert sthresh.default is None and "[default: 8, or the --preset's]" in sthresh.help


def test_mil_train_options_show_train_configs_defaults_and_choices() -> None:
    """`mil train`'s options are written out by hand: each default and choice is `TrainConfig`'s."""
    import dataclasses

    from attnmap.mil.clam import CLAM_SIZES
    from attnmap.mil.train import MODELS, TrainConfig

    command = _command(("mil", "train"))
    fields = {item.name: item.default for item in dataclasses.fields(TrainConfig)}
    options = [p for p in command.params if isinstance(p, click.Option)
               and p.name not in ("out_dir", "device")]
    assert {p.name for p in options} <= set(fields)
    context = click.Context(command)
    for option in options:
        assert option.get_default(context) == fields[option.name], option.name
    assert list(_option(command, "--model").type.choices) == list(MODELS)
    assert sorted(_option(command, "--size").type.choices) == sorted(CLAM_SIZES)


def test_explain_default_method_is_the_apis() -> None:
    from attnmap.cli.explain import default_method
    from attnmap.vit.explain import explain

    assert _option(_command(("explain",)), "--method").default is None  # resolved from the API
    assert default_method() == inspect.signature(explain).parameters["method"].default


def test_train_shapes_never_writes_into_the_package() -> None:
    import attnmap

    default = Path(_option(_command(("train-shapes",)), "--out").default).resolve()
    assert default == Path("shapes-vit").resolve()
    assert Path(attnmap.__file__).parent not in default.parents


def test_global_flags_work_before_or_after_the_subcommand(capsys: pytest.CaptureFixture) -> None:
    assert hoist_global_flags(["wsi", "run", "c.yaml", "--quiet", "--debug"]) == [
        "--debug", "--quiet", "wsi", "run", "c.yaml",
    ]
    assert hoist_global_flags(["explain", "--", "--quiet"]) == ["explain", "--", "--quiet"]
    for args in (["--quiet", "methods"], ["methods", "--quiet"], ["methods", "--debug"]):
        code, out, err = run_cli(capsys, *args)
        assert code == 0 and "attention" in out and not err


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pipeline_setup(tmp_path_factory.mktemp("consistency"), n_slides=1)


def _config_with(setup: Path, section: str, key: str, value: object) -> Path:
    raw = yaml.safe_load(setup.read_text())
    raw.setdefault(section, {})[key] = value
    path = setup.parent / f"bad_{section}_{key}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("patching", "patch_size", "256"),
        ("patching", "patch_size", True),
        ("patching", "patch_size", 128.5),
        ("model", "class_names", "normal"),
        ("heatmap", "cmap", "nope"),
        ("heatmap", "vis_level", 9),
        ("segmentation", "preset", "tcgaa"),
        ("patching", "contour_check", "corner"),
        ("run", "device", "gpu"),
    ],
)
def test_bad_config_values_exit_2_with_one_line_naming_the_key(
    setup: Path, capsys: pytest.CaptureFixture, section: str, key: str, value: object
) -> None:
    code, _, err = run_cli(capsys, "wsi", "run", _config_with(setup, section, key, value))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and f"{section}.{key}" in lines[0] and "Traceback" not in err
    assert not (setup.parent / "out").exists()  # failed before any work


def test_debug_after_the_subcommand_shows_the_traceback(setup: Path) -> None:
    from attnmap.errors import InputError

    with pytest.raises(InputError, match="patching.patch_size"):
        main(["wsi", "run", str(_config_with(setup, "patching", "patch_size", "256")), "--debug"])


def test_a_preset_with_a_disagreeing_value_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    slide = tmp_path / "s.tif"
    slide.write_bytes(b"")  # never opened: the options fail first
    code, _, err = run_cli(
        capsys, "wsi", "segment", slide, "-o", tmp_path / "o", "--preset", "tcga", "--a-t", "5"
    )
    assert code == 2 and "preset 'tcga' disagrees" in err and "a_t=5.0 (preset: 16)" in err
    assert not (tmp_path / "o").exists()


def test_out_naming_a_file_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    slide = tmp_path / "s.tif"
    slide.write_bytes(b"")
    for args in (("wsi", "segment", slide), ("train-shapes",), ("mil", "attention", slide, slide)):
        code, _, err = run_cli(capsys, *args, "-o", slide)
        assert code == 2 and "is a file" in err and len(err.strip().splitlines()) == 1


def test_errors_start_on_their_own_line_not_inside_a_progress_bar(
    setup: Path, capsys: pytest.CaptureFixture
) -> None:
    bar = tqdm(total=10, desc="busy", file=sys.stderr, mininterval=0)
    bar.update(3)
    code, _, err = run_cli(capsys, "wsi", "run", _config_with(setup, "heatmap", "alpha", 2))
    assert code == 2
    assert "\nattnmap: error: heatmap.alpha" in err  # the bar's line was ended first
    assert bar.disable or bar.n == 3
