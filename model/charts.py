"""Chart text in English or Chinese: matplotlib draws Chinese only with a CJK font.

``chart_lang(lang)`` says which language a chart can be drawn in (Chinese needs one of
``CJK_FAMILIES`` installed, e.g. Debian's ``fonts-wqy-microhei`` or
``fonts-noto-cjk``; without one, charts fall back to English); ``chart_fonts(lang)``
is the matplotlib font setting to draw them with: DejaVu Sans for Latin text, falling
back glyph by glyph to the CJK font.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

CJK_FAMILIES = (
    "Noto Sans CJK SC",
    "Source Han Sans SC",
    "WenQuanYi Micro Hei",
    "WenQuanYi Zen Hei",
    "Droid Sans Fallback",
    "AR PL UMing CN",
    "SimHei",
    "Microsoft YaHei",
    "PingFang SC",
)


@functools.cache
def cjk_font() -> str | None:
    """The first installed font family of ``CJK_FAMILIES``, or None. Fonts installed
    after matplotlib cached its font list are found too."""
    from matplotlib import font_manager

    fm = font_manager.fontManager
    found = _first_cjk(fm)
    if found is None:
        known = {f.fname for f in fm.ttflist}
        for path in font_manager.findSystemFonts():
            if path not in known:
                try:
                    fm.addfont(path)
                except (OSError, RuntimeError, ValueError):  # a font file it cannot read
                    continue
        found = _first_cjk(fm)
    return found


def _first_cjk(fm) -> str | None:
    installed = {f.name for f in fm.ttflist}
    return next((family for family in CJK_FAMILIES if family in installed), None)


def chart_lang(lang: str) -> str:
    """``lang`` when charts can be drawn in it, else ``en``."""
    return "zh" if lang == "zh" and cjk_font() is not None else "en"


@contextmanager
def chart_fonts(lang: str) -> Iterator[None]:
    """Draw (create and save) figures inside this block for text in ``lang``."""
    import matplotlib

    font = cjk_font() if lang == "zh" else None
    families = ["DejaVu Sans", font] if font else ["DejaVu Sans"]
    with matplotlib.rc_context({"font.family": families}):
        yield
