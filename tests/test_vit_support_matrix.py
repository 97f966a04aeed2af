"""Every listed family × every method on tiny seeded models; the README's table is this run's output."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from attnmap.vit import support_matrix
from attnmap.vit.explain import explain
from attnmap.vit.registry import methods
from attnmap.vit.targets import slice_target

DOC = Path(__file__).resolve().parents[1] / "docs" / "support_matrix.md"


@pytest.fixture(scope="module")
def measured() -> dict[str, dict[str, support_matrix.Result]]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return support_matrix.results()
    finally:
        torch.set_num_threads(threads)


def test_every_family_runs_every_method(measured) -> None:
    for family, row in measured.items():
        for method, result in row.items():
            # Grad-CAM's clamp after the head mean may zero a map; then it must have been reported
            allowed = ("✓", "✓ flat¹") if method == "attn_gradcam" else ("✓",)
            assert result.status in allowed, (family, method, result.status)


def test_docs_table_equals_a_fresh_generation(measured) -> None:
    assert DOC.read_text(encoding="utf-8") == support_matrix.table(measured), (
        "docs/support_matrix.md is stale: run python -m attnmap.vit.support_matrix docs/support_matrix.md"
    )


def test_batch_equals_single_images_for_every_family(single_thread: None, measured) -> None:
    x = support_matrix.images()
    for family in support_matrix.families():
        model = support_matrix.build(family)
        for method, result in measured[family.name].items():
            alone = []
            for index in range(x.shape[0]):
                target = slice_target(result.target, index, index + 1, x.shape[0])
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    alone.append(explain(model, x[index : index + 1], method, target=target))
            alone_maps = torch.cat(alone)
            scale = float(alone_maps.abs().max()) or 1.0
            error = float((result.maps - alone_maps).abs().max())
            assert error <= 1e-9 * scale, (family.name, method, error / scale)


def test_refused_configurations_refuse_each_method_in_one_line_or_map(single_thread: None) -> None:
    """Every method on every refused configuration: a good map, or one UnsupportedModelError line
    (never another exception, a traceback-sized message or a silently wrong map)."""
    x = support_matrix.images()
    for refusal in support_matrix.refused():
        label = refusal.label
        family = support_matrix.Family(label, refusal.build, headless=refusal.headless)
        model = support_matrix.build(family)
        statuses = {method: support_matrix.check(family, method, model, x).status for method in methods()}
        for method, status in statuses.items():
            good = status in ("✓", "✓ flat¹") or (status.startswith("refused: ") and "\n" not in status)
            assert good, (label, method, status)
        assert any(status.startswith("refused: ") for status in statuses.values()), label


def test_readme_shows_the_generated_table():
    """README's architecture table is the generated one (no sentence or row claims more)."""
    readme = (DOC.parents[1] / "README.md").read_text(encoding="utf-8")
    doc = DOC.read_text(encoding="utf-8")
    table = doc[doc.index("| family |") : doc.index("## Refused")].strip()
    assert table in readme
