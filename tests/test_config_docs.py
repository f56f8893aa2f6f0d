"""docs/configuration.md is generated from the configuration models and kept in sync."""
from pathlib import Path

from scenarios.config_docs import render

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def test_committed_configuration_docs_match_the_models():
    assert DOC.read_text() == render(), "regenerate: python -m scenarios.config_docs > docs/configuration.md"


def test_docs_name_units_bounds_and_defaults():
    text = render()
    assert "| `skull.thickness_min_mm` | number | mm | `0.27` | [0.05, 1] | thinnest bone |" in text
    assert "`controllers.milling.traverse_speed_m_s` | number | m/s | `0.004` | (0, 0.05]" in text
    assert "### `milling`" in text and "binary: `success`, `detachable`, `breached`, `complete`" in text
