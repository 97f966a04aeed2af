"""What a cache derived from a model must be keyed on, so that it never outlives the model it was made
from (the LRP twin's verification, the CPU encoder graph).

Why each part: the identity of every parameter and buffer tensor changes when one is replaced; its
in-place version counter changes with an optimiser step or ``load_state_dict``; the identities of
the modules change when a submodule is swapped, including one without weights (an activation).
"""

from __future__ import annotations

from torch import nn


def model_state(model: nn.Module) -> tuple:
    """A hashable key that changes whenever ``model``'s weights or submodules do."""
    tensors = tuple((id(t), t._version) for t in list(model.parameters()) + list(model.buffers()))
    return tensors, tuple(id(module) for module in model.modules())
