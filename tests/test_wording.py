"""Words a client or staff member reads are spelt one way: US English ("authorize")."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
READ_BY_PEOPLE = ("templates", "billing", "portal", "integrations", "docs", "README.md", "SECURITY.md")


def test_authorize_is_spelt_the_us_way_everywhere_people_read_it() -> None:
    found = []
    for top in READ_BY_PEOPLE:
        path = ROOT / top
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()
                                                and p.suffix in {".py", ".html", ".txt", ".md", ".js"}]
        for file in files:
            for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
                if re.search(r"authoris", line, re.IGNORECASE):
                    found.append(f"{file.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == []
