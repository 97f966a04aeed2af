"""The ``attnmap`` command: a click group whose subcommands live one module per command group.

Subcommand modules are imported only when used, so ``attnmap --help`` stays quick; they import
torch and friends inside their functions, and torch itself is imported once the command line has
parsed (`TorchContext`): help, the version and a usage error answer without it.
"""

from __future__ import annotations

import contextlib
import importlib
import signal
import sys
import warnings
from typing import Any

import click

from attnmap._version import __version__
from attnmap.errors import InputError
from attnmap.stop_signals import ignore_stop_signals, signals_raise, stop_line, stop_signals_exit, stopped_by

# name -> "module:attribute" of a click command or group
SUBCOMMANDS: dict[str, str] = {
    "demo": "attnmap.cli.demo:demo",
    "explain": "attnmap.cli.explain:explain",
    "methods": "attnmap.cli.explain:list_methods",
    "mil": "attnmap.cli.mil:mil",
    "wsi": "attnmap.cli.wsi:wsi",
    "evaluate": "attnmap.cli.evaluate:evaluate",
    "train-shapes": "attnmap.cli.evaluate:train_shapes",
    "view": "attnmap.cli.view:view",
}

# The commands whose code imports torch (all but the viewer): `TorchContext` imports it for them.
TORCH_COMMANDS = frozenset(SUBCOMMANDS) - {"view"}

# Errors that mean "the user gave us something wrong": one line, exit status 2.
USER_ERRORS = (InputError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in SUBCOMMANDS if self.get_command(ctx, name) is not None)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name == module_name:  # that command group is not part of this build
                return None
            raise
        command = getattr(module, attribute)
        if name in TORCH_COMMANDS:
            _import_torch_on_run(command)
        return command


class TorchContext(click.Context):
    """The context of a command whose code imports torch: `import_torch_first` runs once the whole
    command line has parsed, just before the command's own code. Not earlier, because help, the
    version and a usage error (an unknown option, a missing argument, a bad choice) need no torch
    and should answer at once; parsing happens in each command's `make_context`, below the root."""

    def invoke(self, callback: Any, /, *args: Any, **kwargs: Any) -> Any:
        if callback is self.command.callback and not isinstance(self.command, click.Group):
            import_torch_first()  # a group's own callback runs before its subcommand is parsed
        return super().invoke(callback, *args, **kwargs)


def _import_torch_on_run(command: click.Command) -> None:
    """Give ``command`` and, for a group, every subcommand a `TorchContext` (click makes each
    command's context from its ``context_class``)."""
    command.context_class = TorchContext
    for subcommand in getattr(command, "commands", {}).values():
        _import_torch_on_run(subcommand)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="attnmap")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors (anywhere on the line).")
@click.option("--quiet", is_flag=True, help="No progress bars (anywhere on the line).")
def cli(debug: bool, quiet: bool) -> None:
    """attnmap: attention maps from Vision Transformers and attention-MIL slide models."""


GLOBAL_FLAGS = ("--debug", "--quiet")


def hoist_global_flags(args: list[str]) -> list[str]:
    """Move ``--debug`` / ``--quiet`` given after a subcommand in front of it, where the root group
    reads them: they work anywhere on the command line (not after a ``--``)."""
    end = args.index("--") if "--" in args else len(args)
    found = [flag for flag in GLOBAL_FLAGS if flag in args[:end]]
    rest = [arg for arg in args[:end] if arg not in GLOBAL_FLAGS] + args[end:]
    return found + rest


def close_progress_bars() -> None:
    """Close live tqdm bars so that an error message starts on its own line, not inside a bar."""
    tqdm_module = sys.modules.get("tqdm")
    if tqdm_module is None:
        return
    for bar in list(getattr(tqdm_module.tqdm, "_instances", ())):
        bar.close()


def one_line_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
) -> str:
    """A warning as the CLI prints it: ``attnmap: warning: ...`` on one line of its own (Python's
    default adds the file, the line number and the source line: two lines, inside a progress bar)."""
    text = " ".join(str(message).split())
    text = text.removeprefix("attnmap: ")
    if not category.__module__.startswith("attnmap."):  # another library's: say what kind it is
        text = f"{category.__name__}: {text}"
    tqdm_module = sys.modules.get("tqdm")
    live_bar = tqdm_module is not None and bool(getattr(tqdm_module.tqdm, "_instances", ()))
    return ("\n" if live_bar else "") + f"attnmap: warning: {text}\n"


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the CLI and turn errors and warnings into one-line messages."""
    args = hoist_global_flags(list(sys.argv[1:] if argv is None else argv))
    debug = "--debug" in args
    previous_format = warnings.formatwarning
    if not debug:
        warnings.formatwarning = one_line_warning  # recorded warnings (catch_warnings) are unaffected
    try:
        with signals_raise():  # SIGTERM, SIGHUP: the same clean stop as Ctrl-C
            _run(args, debug)
    except Stopped:
        if argv is None:  # the process is the command: its stop line is its last
            sys.stdout.flush()
            sys.stderr.flush()
            _quiet_stdout()  # also for a process it started that is still starting (a Dask worker)
        raise
    finally:
        warnings.formatwarning = previous_format
        if argv is None:  # the process is the command: its work is written and its line said
            ignore_stop_signals()  # a stop during Python's own teardown would only change the status


def import_torch_first() -> None:
    """Import torch before a command that needs it runs, with a stop during the import ending the
    process on the spot (one line, 128 + the signal): the import takes seconds (the command line's
    first ones), the command has written nothing yet, and a KeyboardInterrupt raised inside torch's
    import does not unwind cleanly (`attnmap.stop_signals.stop_signals_exit`). Called by
    `TorchContext`, so not for help, the version or a usage error, whose answers need no torch."""
    with stop_signals_exit():
        import numpy  # noqa: F401
        import torch  # noqa: F401


def _run(args: list[str], debug: bool) -> None:
    try:
        code = cli.main(args=args, prog_name="attnmap", standalone_mode=False)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.exceptions.Abort as abort:  # click's for a KeyboardInterrupt (Ctrl-C, SIGTERM, SIGHUP)
        _stop(abort)
    except KeyboardInterrupt as interrupt:  # one raised outside click's own handling
        _stop(interrupt)
    except click.ClickException as error:
        close_progress_bars()
        if debug:
            raise
        click.echo(f"attnmap: error: {error.format_message()}", err=True)
        sys.exit(error.exit_code)
    except USER_ERRORS as error:
        close_progress_bars()
        if debug:
            raise
        click.echo(f"attnmap: error: {_one_line(error)}", err=True)
        sys.exit(2)
    except Exception as error:  # noqa: BLE001 - the last line of defence of a CLI
        close_progress_bars()
        if debug:
            raise
        click.echo(
            f"attnmap: internal error: {type(error).__name__}: {_one_line(error)} "
            "(run with --debug for the traceback)",
            err=True,
        )
        sys.exit(1)
    # outside standalone mode click returns ctx.exit(n)'s code instead of raising it
    if isinstance(code, int) and code != 0:
        sys.exit(code)


class Stopped(SystemExit):
    """The exit of a command stopped by a signal (or an aborted prompt), its line said."""


def _stop(error: BaseException) -> None:
    """One line and the exit status a shell gives a process the signal killed (128 + its number);
    a bare Abort (a prompt answered with Ctrl-D) says "aborted"."""
    close_progress_bars()
    terminated = stopped_by(error)
    if terminated is not None:
        message, status = stop_line(terminated.signum)
    elif isinstance(error, KeyboardInterrupt) or isinstance(error.__cause__, KeyboardInterrupt):
        message, status = stop_line(signal.SIGINT)
    else:
        message, status = "attnmap: aborted", 130
    try:
        click.echo(message, err=True)
    except OSError:  # the terminal is gone (SIGHUP) or stderr is a closed pipe
        _quiet_stdout()
    raise Stopped(status)


def _quiet_stdout() -> None:
    """Point stdout and stderr at /dev/null, so that flushing them at exit raises no second error."""
    import os

    null = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.dup2(null, stream.fileno())
    os.close(null)


def _one_line(error: BaseException) -> str:
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.strerror}: {error.filename}"
    return " ".join(str(error).split()) or type(error).__name__
