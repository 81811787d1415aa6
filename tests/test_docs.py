"""Every relative link in README.md and docs/*.md reaches a file, and every
#anchor a heading of it, by GitHub's rule: the heading's text lower-cased,
punctuation but '-' and '_' dropped, spaces made '-', a repeat suffixed -1, -2.
Headings and links inside code are not headings and links."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def without_code(text):
    """The text less fenced blocks, inline code kept as a placeholder."""
    text = re.sub(r"^\s*```.*?^\s*```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "code", text)


def anchors(path):
    """The anchors GitHub makes for the headings of path."""
    made, seen, fenced = set(), {}, False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        heading = None if fenced else re.match(r"#{1,6}\s+(.*?)\s*$", line)
        if heading:
            anchor = re.sub(r"[^\w\- ]", "", heading[1].lower()).replace(" ", "-")
            made.add(f"{anchor}-{seen[anchor]}" if anchor in seen else anchor)
            seen[anchor] = seen.get(anchor, 0) + 1
    return made


def links(page):
    """(target, file it names or None, anchor or '') of every relative link."""
    for target in re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", without_code(page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        yield target, (page.parent / path) if path else page, anchor


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_links_resolve(page):
    broken = [target for target, dest, anchor in links(page)
              if not dest.exists() or (anchor and anchor not in anchors(dest))]
    assert not broken, broken


def test_the_readme_links_every_page():
    named = {dest.resolve() for _, dest, _ in links(ROOT / "README.md")}
    assert set(PAGES[1:]) <= named
