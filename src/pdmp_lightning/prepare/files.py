"""Atomic outputs: every file and frame folder is written under a temporary name and renamed into place."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = ["TEMP_SUFFIX"]

TEMP_SUFFIX = ".prepare-tmp"


@contextlib.contextmanager
def _atomic_file(path: Path) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; renames it into place when the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def _atomic_directory(path: Path) -> Iterator[Path]:
    """Yields a temporary folder beside ``path``; renames it into place (replacing ``path``) on success."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX))
    try:
        yield temporary
        if path.is_dir() and not path.is_symlink():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old.", suffix=TEMP_SUFFIX))
            os.replace(path, old)  # onto an empty folder: allowed, and atomic
            os.replace(temporary, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            if path.exists() or path.is_symlink():
                path.unlink()
            os.replace(temporary, path)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)


def _save_npy(array: np.ndarray, path: Path) -> None:
    with path.open("wb") as handle:
        np.save(handle, array, allow_pickle=False)


def _write_text_if_changed(path: Path, text: str) -> bool:
    """Writes ``text`` atomically unless ``path`` already holds it; True when it wrote."""
    if path.is_file() and path.read_bytes() == text.encode("utf-8"):
        return False
    with _atomic_file(path) as temporary:
        temporary.write_text(text, encoding="utf-8", newline="")
    return True


def _copy_if_changed(source: Path, target: Path) -> bool:
    """Copies ``source`` to ``target`` atomically unless it holds the same bytes; True when it wrote."""
    if target.is_file() and target.read_bytes() == source.read_bytes():
        return False
    with _atomic_file(target) as temporary:
        shutil.copyfile(source, temporary)
    return True


def _remove_stale_temporaries(directory: Path) -> int:
    """Removes the ``*.prepare-tmp`` leftovers of an interrupted run in ``directory``."""
    if not directory.is_dir():
        return 0
    removed = 0
    for leftover in directory.glob(f".*{TEMP_SUFFIX}"):
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
        removed += 1
    return removed
