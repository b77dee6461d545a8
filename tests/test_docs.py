"""Docs are claims: every relative link in the project's Markdown leads to a file or directory that
exists, and every #anchor to a heading of the page it names."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT

# Inline links and images, [text](target) or [text](target "title"), outside code spans.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def markdown_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    return sorted(path for path in listed if (ROOT / path).is_file())


def links(text: str) -> list[str]:
    text = FENCE.sub("", text)
    # A link's text may be a code span ([`server`](roles/server/README.md)); a code span alone is no link.
    text = CODE_SPAN.sub(lambda match: "x" if match.end() < len(text) and text[match.end()] == "]" else "", text)
    return LINK.findall(text)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    heading = re.sub(r"`|\*\*|__", "", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", heading).replace(" ", "-")


def anchors(text: str) -> set[str]:
    text = FENCE.sub("", text)
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M):
        anchor, n = slug(heading), 1
        while anchor in found:  # GitHub numbers repeated headings: name, name-1, ...
            anchor, n = f"{slug(heading)}-{n}", n + 1
        found.add(anchor)
    return found


def broken_links(markdown: Path, text: str | None = None) -> list[str]:
    """The links of a Markdown file (its text, or the given one) that lead nowhere."""
    text = markdown.read_text() if text is None else text
    broken = []
    for target in links(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...: not ours to check here
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (markdown.parent / path_part).resolve() if path_part else markdown
        if ROOT not in resolved.parents and resolved != ROOT:
            broken.append(f"{target}: outside the repository")
        elif not resolved.exists():
            broken.append(f"{target}: no such file or directory")
        elif anchor and (resolved.suffix != ".md"
                         or anchor not in anchors(text if resolved == markdown else resolved.read_text())):
            broken.append(f"{target}: no heading #{anchor} in {resolved.relative_to(ROOT)}")
    return broken


def test_the_readme_and_every_role_readme_are_checked():
    files = markdown_files()
    assert "README.md" in files
    assert {f"roles/{role.name}/README.md" for role in (ROOT / "roles").iterdir() if role.is_dir()} <= set(files)


@pytest.mark.parametrize("markdown", markdown_files())
def test_every_relative_link_resolves(markdown):
    assert broken_links(ROOT / markdown) == []


def test_a_broken_link_or_anchor_is_found():
    text = ("# Title\n## The `upstream` contract\n[ok](#title) [ok](#the-upstream-contract) [`ok`](README.md)\n"
            "[bad](no/such/file.md) [bad](#nowhere) [bad](roles/nginx/README.md#no-such-heading) "
            "[bad](../../outside.md)\n`[not a link](nowhere.md)`\n```\n[not a link](nowhere.md)\n```\n")
    assert broken_links(ROOT / "README.md", text) == [
        "no/such/file.md: no such file or directory",
        "#nowhere: no heading #nowhere in README.md",
        "roles/nginx/README.md#no-such-heading: no heading #no-such-heading in roles/nginx/README.md",
        "../../outside.md: outside the repository",
    ]


def test_the_local_inventory_points_at_paths_that_exist():
    """inventories/local/hosts.yml sends readers of the sandbox to the environment template."""
    text = (ROOT / "inventories" / "local" / "hosts.yml").read_text()
    mentioned = re.findall(r"\b((?:templates|inventories)/[\w./-]*\w)", text)
    assert "templates/environment" in mentioned
    missing = [path for path in mentioned if not (ROOT / path).exists()]
    assert missing == []
