"""The value types of the `wsi run` configuration's keys (ranges, choices, checks) and the checks
behind them, each a one-line `InputError` naming the problem; `attnmap.wsi.pipeline.config` types
its sections with them.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from annotated_types import Ge, Le

from attnmap.errors import InputError
from attnmap.validation import Check
from attnmap.wsi.parameters import CHANNELS, CONTOUR_CHECKS, MAX_KERNEL, PRECISION_NAMES, PRESETS

Positive = Annotated[int, Ge(1)]
NonNegative = Annotated[int, Ge(0)]
PresetName = Literal[tuple(PRESETS)]  # type: ignore[valid-type]
ChannelName = Literal[CHANNELS]  # type: ignore[valid-type]
ContourCheck = Literal[CONTOUR_CHECKS]  # type: ignore[valid-type]
Precision = Literal[PRECISION_NAMES]  # type: ignore[valid-type]


def check_device(device: str) -> str:
    """``device`` if it is auto, cpu, cuda or cuda:N; else `InputError`."""
    if device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", device):
        return device
    raise InputError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")


Device = Annotated[str, Check(check_device)]


def check_scheduler(address: str) -> str:
    """``address`` if Dask can parse it as a scheduler address (tcp://host:port, ...); else `InputError`.

    Why now: a malformed address (no port) was a ValueError from dask.distributed, an internal
    error after the slide list was read."""
    try:
        from distributed.comm.addressing import parse_address, parse_host_port
    except ImportError:  # the [dist] extra is missing: said when the run needs it
        return address
    try:
        scheme, location = parse_address(address)
        if scheme in ("tcp", "tls"):
            parse_host_port(location)
    except ValueError as error:
        raise InputError(
            f"not a Dask scheduler address ({error}): give tcp://HOST:PORT, e.g. tcp://10.0.0.5:8786"
        ) from None
    return address


def check_distinct(names: list[str]) -> list[str]:
    """``names`` if no name is given twice; else `InputError` (two classes under one name in the
    predictions CSV and the heatmap titles)."""
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InputError(f"names given more than once: {', '.join(repeated)}")
    return names


def check_odd(value: int) -> int:
    """``value`` if it is odd (a median blur kernel); else `InputError`."""
    if value % 2 == 1:
        return value
    raise InputError(f"must be odd (a median blur kernel size), got {value}")


OddPositive = Annotated[int, Ge(1), Le(MAX_KERNEL), Check(check_odd)]
Kernel = Annotated[int, Ge(0), Le(MAX_KERNEL)]


SchedulerAddress = Annotated[str, Check(check_scheduler)]
