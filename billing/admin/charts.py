"""Small charts drawn on the server as inline SVG: no JavaScript, no CDN, nothing to vendor.

Each chart comes with its numbers as rows, and the template shows them as a table beside the picture
(screen readers get the table; the SVG has a title and is labelled by it).
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from django.utils.safestring import SafeString, mark_safe

from billing.money import format_cents

WIDTH, BAR_HEIGHT, GAP, LABEL_WIDTH, VALUE_WIDTH = 420, 22, 8, 130, 100
COLOURS = ("#417690", "#79aec8", "#c4a000", "#ba2121", "#5b8a3c", "#7a5c99")


@dataclass(frozen=True)
class Chart:
    title: str
    svg: SafeString
    rows: list[tuple[str, str]]


def bar_chart(*, title: str, bars: list[tuple[str, int]], unit: str = "dollars") -> Chart:
    """Horizontal bars, one per (label, value); values in cents for ``dollars``, else plain counts."""
    def shown(value: int) -> str:
        return format_cents(value) if unit == "dollars" else f"{value:,}"

    top = max([abs(v) for _, v in bars] + [1])
    span = WIDTH - LABEL_WIDTH - VALUE_WIDTH
    height = len(bars) * (BAR_HEIGHT + GAP) + GAP
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{WIDTH}" height="{height}" '
             f'viewBox="0 0 {WIDTH} {height}" class="chart"><title>{escape(title)}</title>']
    for i, (label, value) in enumerate(bars):
        y = GAP + i * (BAR_HEIGHT + GAP)
        length = round(span * max(value, 0) / top)
        parts.append(f'<text x="{LABEL_WIDTH - 6}" y="{y + 15}" text-anchor="end" font-size="12">{escape(label)}</text>'
                     f'<rect x="{LABEL_WIDTH}" y="{y}" width="{length}" height="{BAR_HEIGHT}" '
                     f'fill="{COLOURS[i % len(COLOURS)]}"></rect>'
                     f'<text x="{LABEL_WIDTH + length + 6}" y="{y + 15}" font-size="12">{escape(shown(value))}</text>')
    parts.append("</svg>")
    return Chart(title, mark_safe("".join(parts)), [(label, shown(value)) for label, value in bars])
