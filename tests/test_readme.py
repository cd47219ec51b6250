"""The README is a short door and the docs pages hold the rest: plain Markdown, no build step.

Checks that every relative link or image in README.md and docs/**/*.md points at a file of the
repository (and at a heading that exists, when it names one), that the files and folders the pages
name in code (``configs/...yaml``, ``scripts/...py``, ``lit_effdl/...``) exist, and that no README
build script or tracker wording has come back.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MAX_README_LINES = 250
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
# Pages describing the code as it is now (the experiment logs under docs/experiments/ are history).
CURRENT_PAGES = [page for page in PAGES if "experiments" not in page.relative_to(ROOT).parts]

INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)
HTML_SOURCE = re.compile(r"<(?:img|a)\b[^>]*?\b(?:src|href)=\"([^\"]+)\"", re.I)
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)
REPO_PATH = re.compile(r"(?<![\w/.-])((?:configs|scripts|lit_effdl|tests|docs)/[\w./-]*\w)")
TRACKER_WORDS = re.compile(r"\b(?:issue|lecture|stop)\s+#?\d+\b|\bthe issue's\b", re.I)
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".cfg", ".txt", ".sh", ".sbatch", ".json"}
SKIP_DIRS = {"lightning_logs", "runs", "node_modules", "__pycache__"}


def _name(page: Path) -> str:
    return str(page.relative_to(ROOT))


def links(text: str) -> list[str]:
    """Every link target of a Markdown text: inline, reference-style and HTML ``src`` / ``href``."""
    return [m.group(1) for pattern in (INLINE_LINK, REFERENCE_LINK, HTML_SOURCE) for m in pattern.finditer(text)]


def heading_anchors(text: str) -> set[str]:
    """The anchors GitHub gives a page's headings (lower case, punctuation dropped, spaces to '-')."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)  # '#' lines inside code blocks are not headings
    anchors = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, flags=re.M):
        heading = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
        anchors.add(re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-"))
    return anchors


def broken_links(page: Path, text: str | None = None) -> list[str]:
    """The relative links of ``page`` (or of ``text`` placed there) that name no file in the
    repository, or no heading of it."""
    broken = []
    for target in links(page.read_text(encoding="utf-8") if text is None else text):
        if SCHEME.match(target):
            continue  # https:, mailto: ...
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / unquote(path_part)).resolve() if path_part else page
        if not resolved.is_relative_to(ROOT) or not resolved.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in heading_anchors(resolved.read_text(encoding="utf-8")):
            broken.append(f"{target} (no heading #{anchor} in {_name(resolved)})")
    return broken


def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; move detail to docs/ (at most {MAX_README_LINES})"


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_every_relative_link_resolves(page: Path) -> None:
    assert not broken_links(page), f"{_name(page)}: broken links {broken_links(page)}"


@pytest.mark.parametrize("page", CURRENT_PAGES, ids=_name)
def test_paths_named_in_pages_exist(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    missing = sorted({p for p in REPO_PATH.findall(text) if not (ROOT / p.rstrip(".")).exists()})
    assert not missing, f"{_name(page)} names files that do not exist: {missing}"


@pytest.mark.parametrize("page", CURRENT_PAGES, ids=_name)
def test_no_tracker_words(page: Path) -> None:
    found = TRACKER_WORDS.findall(page.read_text(encoding="utf-8"))
    assert not found, f"{_name(page)}: describe the code, not its history ({found})"


def _repository_text_files():
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS and not d.endswith(".egg-info")]
        for name in files:
            path = Path(folder) / name
            if path.suffix in TEXT_SUFFIXES or name == "Makefile":
                yield path


def test_readme_needs_no_build_step() -> None:
    marker = "build" + "_readme"  # spelled in two parts so this file does not match itself
    assert not (ROOT / "scripts" / f"{marker}.py").exists()
    assert not (ROOT / "docs" / "sections").exists(), "the per-topic pages live in docs/*.md"
    mentions = [_name(p) for p in _repository_text_files() if marker in p.read_text(encoding="utf-8", errors="ignore")]
    assert not mentions, f"references to the removed README build script: {mentions}"
    assert "<!-- SECTIONS -->" not in README.read_text(encoding="utf-8")


def test_link_checker_sees_broken_links() -> None:
    """The checks above can fail: a missing file, a missing heading and a path outside the repository."""
    page = ROOT / "docs" / "README.md"
    text = "[a](missing.md) ![b](no.png) [c](usage.md#no-such-heading) [d](../../outside.md) [e](https://x.org/y)"
    assert links(text) == ["missing.md", "no.png", "usage.md#no-such-heading", "../../outside.md", "https://x.org/y"]
    assert len(broken_links(page, text)) == 4
    assert broken_links(page, "[ok](usage.md#metrics-fixed-names) ![ok](label_efficiency.png) [ok](../README.md)") == []
    assert "cutmix-and-mixup" in heading_anchors("## CutMix and Mixup\n```\n# not a heading\n```\n")
    assert "not-a-heading" not in heading_anchors("```\n# not a heading\n```\n")
    assert TRACKER_WORDS.search("as lecture 3 says") and not TRACKER_WORDS.search("3 lectures")
