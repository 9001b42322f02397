"""CSV that a spreadsheet opens as text: every CSV the portal writes goes through ``csv_safe_writer``.

A spreadsheet runs a cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return as a
formula, so a client named ``=HYPERLINK("http://x")`` would become a live link (or worse) in the
practice's spreadsheet. Such a cell is written with a leading single quote (the OWASP rule), which the
spreadsheet shows as text. A plain number (``-12.50``, ``-1250``) is left as it is: money columns keep
working as numbers.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from typing import Any, Protocol

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
PLAIN_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")


def safe_cell(value: Any) -> str:
    """The cell as text, with a quote in front when a spreadsheet would read it as a formula."""
    text = "" if value is None else str(value)
    if text.startswith(FORMULA_STARTS) and not PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


class _Writable(Protocol):
    def write(self, text: str, /) -> Any: ...


class CsvSafeWriter:
    """``csv.writer`` whose every cell passes through ``safe_cell``; returns what the file's write returns
    (a streaming response writes to an echo and yields each line)."""

    def __init__(self, out: _Writable) -> None:
        self._writer = csv.writer(out)

    def writerow(self, row: Iterable[Any]) -> Any:
        return self._writer.writerow([safe_cell(value) for value in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


def csv_safe_writer(out: _Writable) -> CsvSafeWriter:
    return CsvSafeWriter(out)
