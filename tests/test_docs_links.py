"""Every relative link of the README and docs/ reaches a file, and its `#anchor` a heading of that file (GitHub's
heading ids: lower case, punctuation dropped, spaces as hyphens), so moving text between pages cannot leave a reader
at a dead link."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import DOCS

LINK = re.compile(r"\]\(([^)\s]+)\)")


def heading_ids(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # a `# comment` in a code block is no heading
    headings = [line.lstrip("#").strip() for line in text.split("\n") if re.match(r"#{1,6} ", line)]
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def dead_links(page: Path) -> list[str]:
    dead = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path) if path else page
        if not linked.exists():
            dead.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in heading_ids(linked):
            dead.append(f"{target}: no heading #{anchor} in {linked.name}")
    return dead


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_every_relative_link_reaches_its_file_and_heading(page):
    assert dead_links(page) == []


def test_a_dead_link_is_seen(tmp_path):
    (tmp_path / "b.md").write_text("# Title\n\n## Some section: here\n")
    page = tmp_path / "a.md"
    page.write_text("[ok](b.md#some-section-here) [gone](c.md) [bad](b.md#nowhere) [web](https://x.org/#y)\n")
    assert dead_links(page) == ["c.md: no such file", "b.md#nowhere: no heading #nowhere in b.md"]
