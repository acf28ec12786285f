"""MkDocs hooks of the documentation site (``hooks:`` in ``mkdocs.yml``).

- The benchmark reports under ``docs/benchmarks/`` are written by the benchmark scripts: wide tables of
  every run. They get the whole width of the window (no navigation or table-of-contents sidebars), so
  their tables fit without a sideways scroll; the scripts stay free of any site markup.
- A figure and its spread (``93.33 ± 1.18``) never break across lines: the spaces around ``±`` become
  no-break spaces, on every page.
"""

from __future__ import annotations

from typing import Any

#: Pages whose source path starts with this are generated benchmark reports.
REPORTS = "benchmarks/"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if page.file.src_uri.startswith(REPORTS):
        page.meta.setdefault("hide", ["navigation", "toc"])
    return markdown.replace(" ± ", "\u00a0±\u00a0")
