"""Which torch device a name means: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N``.

One rule for every entry point that takes a device (`attnmap.load_model`, feature extraction,
`wsi run`, the demo, the CLI's ``--device``): a name torch does not know, or a GPU this machine
lacks, is an `InputError` before any work starts, not torch's error at the first tensor moved.
"""

from __future__ import annotations

import torch

from attnmap.errors import InputError


def resolve_device(device: str | torch.device | None) -> torch.device:
    """ "auto"/None → CUDA when available, else CPU; anything else as given (checked)."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise InputError(f"unknown device {device!r}: use cpu, cuda, cuda:N or auto") from error
    # messages name the device as asked for (str(device), 'cuda:3'), never just its type
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(
            f"device {str(device)!r} was asked for but no CUDA GPU is available (use cpu or auto)"
        )
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        # checked here, before any slide is read: torch would fail on the first one, mid-run
        count = torch.cuda.device_count()
        raise InputError(
            f"device {str(device)!r} was asked for but this machine has {count} CUDA GPU(s) "
            f"(cuda:0 to cuda:{count - 1})"
        )
    return resolved
