"""Small charts drawn on the server as inline SVG: no JavaScript, no CDN, nothing to vendor.

Each chart comes with its numbers as rows, and the template shows them as a table beside the picture
(screen readers get the table; the SVG has a title and is labelled by it).
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from django.utils.safestring import SafeString, mark_safe

from billing.money import format_cents

# Each bar has its label on a line of its own above it, across the chart's full width: a label beside the
# bar had a fixed width and longer ones were cut at the chart's left edge.
WIDTH, LABEL_HEIGHT, BAR_HEIGHT, GAP, VALUE_WIDTH = 420, 16, 16, 10, 100
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
    span = WIDTH - VALUE_WIDTH
    row = LABEL_HEIGHT + BAR_HEIGHT + GAP
    height = len(bars) * row
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{WIDTH}" height="{height}" '
             f'viewBox="0 0 {WIDTH} {height}" class="chart"><title>{escape(title)}</title>']
    for i, (label, value) in enumerate(bars):
        y = i * row
        length = round(span * max(value, 0) / top)
        parts.append(f'<text x="2" y="{y + 12}" font-size="12">{escape(label)}</text>'
                     f'<rect x="0" y="{y + LABEL_HEIGHT}" width="{length}" height="{BAR_HEIGHT}" '
                     f'fill="{COLOURS[i % len(COLOURS)]}"></rect>'
                     f'<text x="{length + 6}" y="{y + LABEL_HEIGHT + 12}" font-size="12">'
                     f'{escape(shown(value))}</text>')
    parts.append("</svg>")
    return Chart(title, mark_safe("".join(parts)), [(label, shown(value)) for label, value in bars])
