#!/usr/bin/env python3
"""Check the relative links of README.md and docs/**/*.md.

Every Markdown link `[text](target)` or image `![alt](target)` whose target is not a URL
(`scheme:`) must name a file or directory that exists, relative to the page. A target with an
anchor (`page.md#section`, or `#section` on the same page) must name a heading of that page,
spelled as GitHub spells anchors: lower-case, punctuation other than `-` and `_` dropped, spaces
turned into `-`, and `-1`, `-2`, ... appended to repeated headings. Links inside code (fenced
blocks, code spans) are ignored.

Usage:
    check_links.py [--root DIR]

Exit status: 0 every link resolves; 1 otherwise.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\((?P<target><[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^\s*(`{3,}|~{3,})")


def pages(root: Path) -> list[Path]:
    out = [root / "README.md"] if (root / "README.md").is_file() else []
    docs = root / "docs"
    if docs.is_dir():
        out += sorted(docs.rglob("*.md"))
    return out


def unfenced_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of every line outside fenced code blocks, fence lines excluded."""
    out = []
    fence = None
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)
            continue
        if fence is not None:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = None
            continue
        out.append((n, line))
    return out


def prose_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of every line outside fenced code, with code spans blanked."""
    return [(n, re.sub(r"(`+).+?\1", "", line)) for n, line in unfenced_lines(path)]


def heading_anchors(path: Path) -> set[str]:
    """Anchors of every heading, code spans included in the text."""
    seen: dict[str, int] = {}
    out = set()
    for _, line in unfenced_lines(path):
        h = re.match(r"\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not h:
            continue
        rendered = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", h.group(1))  # a link's text only
        slug = re.sub(r"[^\w\- ]", "", rendered.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="check_links.py", description="Check relative links in the docs.")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2])
    args = parser.parse_args(argv)
    root = args.root.resolve()
    cache: dict[Path, set[str]] = {}
    broken = 0
    checked = 0
    for page in pages(root):
        for n, line in prose_lines(page):
            for m in LINK.finditer(line):
                target = m.group("target").strip("<>")
                if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", target):
                    continue  # a URL (https:, mailto:)
                checked += 1
                file_part, _, anchor = target.partition("#")
                dest = (page.parent / file_part).resolve() if file_part else page
                where = f"{page.relative_to(root)}:{n}"
                if not dest.exists():
                    print(f"FAIL {where}: link to {target}: {file_part} does not exist")
                    broken += 1
                    continue
                if anchor and dest.suffix == ".md":
                    if dest not in cache:
                        cache[dest] = heading_anchors(dest)
                    if anchor not in cache[dest]:
                        print(f"FAIL {where}: link to {target}: no heading with anchor #{anchor} in "
                              f"{dest.relative_to(root)}")
                        broken += 1
    print(f"links: {checked} relative links checked in {len(pages(root))} pages, {broken} broken")
    return 0 if broken == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
