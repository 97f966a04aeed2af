"""Warnings of `attnmap explain`'s tasks: recorded where the task runs, said once where the user
looks.

Why: with ``--workers`` each task (a batch of images) runs in a Dask worker, and each one asks
``--method all``'s methods and loads the model on its own, so a warning about the run (a skipped
method, the model's weights) came once per task, in Python's two-line format from the workers'
output. A task returns what it said (`recorded`, as plain strings: task results go into the JSON
run report) and the command says each distinct warning once (`say_once`), after the tasks.
"""

from __future__ import annotations

import contextlib
import importlib
import warnings
from collections.abc import Iterable, Iterator, Mapping

TaskWarning = dict[str, object]
"""One recorded warning: ``category`` (the class's module and qualified name), ``message``,
``filename`` and ``lineno`` (where it was raised)."""


@contextlib.contextmanager
def recorded() -> Iterator[list[TaskWarning]]:
    """Record the warnings raised inside (the filters in force decide which), printing none; the
    list yielded is filled when the block ends."""
    said: list[TaskWarning] = []
    with warnings.catch_warnings(record=True) as caught:
        try:
            yield said
        finally:
            said.extend(
                {
                    "category": f"{item.category.__module__}.{item.category.__qualname__}",
                    "message": str(item.message),
                    "filename": str(item.filename),
                    "lineno": int(item.lineno),
                }
                for item in caught
            )


def say_once(said: Iterable[Mapping[str, object]]) -> None:
    """Warn each distinct (category, message) of ``said`` once, in the order first said, through
    this process's filters and format (the command line's one-line warnings)."""
    seen: set[tuple[str, str]] = set()
    for item in said:
        key = (str(item["category"]), str(item["message"]))
        if key in seen:
            continue
        seen.add(key)
        warnings.warn_explicit(key[1], _category(key[0]), str(item["filename"]), int(item["lineno"]))


def _category(name: str) -> type[Warning]:
    """The warning class called ``name`` (module.Name); UserWarning when it cannot be found."""
    module, _, attribute = name.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError, ValueError):
        return UserWarning
    return found if isinstance(found, type) and issubclass(found, Warning) else UserWarning
