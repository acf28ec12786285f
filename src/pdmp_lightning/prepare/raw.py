"""Raw files: reading split files and indexing the raw download by clip id."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pdmp_lightning.prepare.jobs import EXAMPLES_SHOWN

__all__ = ["AUDIO_EXTENSIONS", "VIDEO_EXTENSIONS"]

VIDEO_EXTENSIONS = (".mp4", ".flv", ".mkv", ".webm", ".avi", ".mov")
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".m4a", ".aac")


def _read_lines(path: Path) -> list[str]:
    """The non-empty lines of a text file (UTF-8 BOM and CRLF tolerated)."""
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    return [line.strip() for line in text.splitlines() if line.strip()]


def _index(folder: Path, extensions: Sequence[str], recursive: bool = False) -> tuple[dict[str, Path], int]:
    """Maps file stems to files with one of ``extensions`` (earlier extensions win, then sorted paths).

    Returns:
        The map and how many further files shared a stem with a mapped one.
    """
    rank = {extension: index for index, extension in enumerate(extensions)}
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    files = [
        path for path in candidates if path.suffix.lower() in rank and not path.name.startswith(".") and path.is_file()
    ]
    files.sort(key=lambda path: (rank[path.suffix.lower()], str(path)))
    found: dict[str, Path] = {}
    duplicates = 0
    for path in files:
        if path.stem in found:
            duplicates += 1
        else:
            found[path.stem] = path
    return found, duplicates


def _unsafe_name(name: str) -> bool:
    return not name or name.startswith(".") or "/" in name or "\\" in name or "\x00" in name


def _missing_rows_line(name: str, clip_ids: Sequence[str], ready: set[str]) -> str:
    missing = [clip for clip in clip_ids if clip not in ready]
    line = f"{name}: {len(clip_ids)} rows"
    if missing:
        line += f", {len(missing)} name clips without complete outputs (e.g. {', '.join(missing[:EXAMPLES_SHOWN])})"
    return line
