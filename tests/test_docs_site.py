"""The documentation as a reader gets it: the built HTML, not only a strict build (part of issue 18)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(out)]
    subprocess.run(command, check=True, cwd=ROOT, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, capture_output=True)
    return out


def pages(site: Path) -> dict[str, str]:
    return {str(p.relative_to(site)): p.read_text(encoding="utf-8") for p in sorted(site.rglob("index.html"))}


def test_docstring_examples_render_as_highlighted_code_not_quotes(site: Path) -> None:
    reference = {name: html for name, html in pages(site).items() if name.startswith("reference/")}
    assert len(reference) == 5  # one page per part of the API
    highlighted = re.compile(r'<div class="highlight"><pre[^>]*>.*?</pre></div>', flags=re.S)
    for name, html in reference.items():
        assert "<blockquote>" not in html, name  # ">>>" read as quote markers: the docstrings must say "Examples:"
        assert "&gt;&gt;&gt;" not in highlighted.sub("", html), name  # every doctest line is in a code block
    blocks = [b for html in reference.values() for b in highlighted.findall(html)]
    assert sum("&gt;&gt;&gt;" in block for block in blocks) >= 30


def test_no_list_runs_into_its_paragraph(site: Path) -> None:
    """A list without the blank line before it renders as one paragraph: "text - item - item"."""
    offenders = {
        name: paragraph[:80]
        for name, html in pages(site).items()
        for paragraph in re.findall(r"<p>(.*?)</p>", html, flags=re.S)
        if re.search(r"\n\s*(?:[-*]|\d+\.) \S", paragraph)
    }
    assert offenders == {}
