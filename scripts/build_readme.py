#!/usr/bin/env python
"""Rebuild README.md's per-topic part from ``docs/sections/*.md``.

Everything between ``<!-- SECTIONS -->`` and ``<!-- /SECTIONS -->`` in README.md is replaced by the
section files in order; their relative links to pictures / JSON are rewritten to ``docs/sections/``
(or ``docs/``), and ``../`` links to ``docs/``. Edit the section files, then run ``python scripts/build_readme.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("3-augmentation", "4-transfer", "5-distillation", "6-semi-supervised", "7-performance", "8-cluster")
START, END = "<!-- SECTIONS -->", "<!-- /SECTIONS -->"


def _link(match: re.Match) -> str:
    name = match.group(1)
    return f"](docs/sections/{name})" if (ROOT / "docs" / "sections" / name).exists() else f"](docs/{name})"


def main() -> None:
    readme = (ROOT / "README.md").read_text()
    start, end = readme.index(START), readme.index(END) + len(END)
    parts = []
    for name in SECTIONS:
        path = ROOT / "docs" / "sections" / f"{name}.md"
        if path.exists():
            text = re.sub(r"\]\((?!https?:|docs/)([^)]+\.(?:png|json))\)", _link, path.read_text().strip())
            text = text.replace("](../", "](docs/")  # a link out of docs/sections, from the repository root
            parts.append(f"<!-- from docs/sections/{name}.md -->\n{text}")
    out = readme[:start] + START + "\n" + "\n\n".join(parts) + "\n" + END + readme[end:]
    tmp = ROOT / "README.md.tmp"
    tmp.write_text(out)
    tmp.replace(ROOT / "README.md")  # never a half-written README
    print(f"README.md: {len(out.splitlines())} lines")


if __name__ == "__main__":
    main()
