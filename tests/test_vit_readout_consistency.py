"""Every method reads a model where the model reads itself: the rows the attention methods start from
(the capture's query) are the rows the LRP methods seed, for every family of the support table.

A family whose two code paths disagreed (HF BEiT without pooler once read the patch mean for the
attention methods and the class token for LRP; timm's distilled DeiT read the class token alone for
the attention methods and ½ class + ½ distillation token, as its output does, for LRP) gives maps of
two different read-outs under one model.
"""

from __future__ import annotations

import pytest
import torch

from attnmap.errors import UnsupportedModelError
from attnmap.vit.capture import capture
from attnmap.vit.lrp.methods import _readout_rows
from attnmap.vit.lrp.readers import build_twin
from attnmap.vit.support_families import SIZE, families

FAMILIES = {family.name: family for family in families()}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_attention_and_lrp_methods_read_the_same_token_rows(single_thread: None, name: str) -> None:
    torch.manual_seed(0)
    model = FAMILIES[name].build().double().eval()
    x = torch.randn(2, 3, SIZE, SIZE, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    try:
        twin = build_twin(model)
    except UnsupportedModelError as error:
        pytest.skip(f"no LRP for this family: {error}")
    query = capture(model, x).query
    trace = twin.forward(x, record_from=0, grad_from=None, record_stem=False)
    torch.testing.assert_close(_readout_rows(twin, query, trace), query, rtol=0, atol=1e-12)
