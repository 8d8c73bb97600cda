"""Chinese chart text: drawn with a CJK font where one is installed (CI installs
fonts-wqy-microhei), never as empty boxes."""

from __future__ import annotations

import io
import os
import warnings

import pytest
from matplotlib.figure import Figure

from model.charts import chart_fonts, chart_lang, cjk_font

needs_font = pytest.mark.skipif(
    cjk_font() is None and os.environ.get("CI") != "true",
    reason="no CJK font installed (apt-get install fonts-wqy-microhei)",
)


def _missing_glyphs(lang: str) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with chart_fonts(lang):
            fig = Figure()
            fig.subplots().set_title("损坏/故障 Damaged / defective")
            fig.savefig(io.BytesIO(), format="png")
    return [str(w.message) for w in caught if "missing from font" in str(w.message)]


@needs_font
def test_chinese_text_is_drawn_with_a_cjk_font():
    assert chart_lang("zh") == "zh"
    assert _missing_glyphs("zh") == []
    assert _missing_glyphs("en")  # the Latin font alone has no Chinese glyphs


def test_without_a_cjk_font_charts_fall_back_to_english(monkeypatch):
    monkeypatch.setattr("model.charts.cjk_font", lambda: None)
    assert chart_lang("zh") == "en"
    assert chart_lang("en") == "en"
