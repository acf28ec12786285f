"""Reading split files and carving a seeded validation split out of a train list."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

import torch

from pdmp_lightning.errors import config_error


@dataclass(frozen=True)
class ClipEntry:
    """One clip as a split file lists it.

    Attributes:
        clip_id: The clip's name, which is also the name of its frame folder and audio file.
        label: Class index.
    """

    clip_id: str
    label: int


def read_rows(path: Path) -> list[tuple[int, str]]:
    """The non-blank lines of a text file, stripped, with their 1-based line numbers.

    A UTF-8 byte-order mark, CRLF or CR line endings and surrounding whitespace are tolerated.
    """
    with path.open(encoding="utf-8-sig", newline=None) as handle:
        return [(number, line.strip()) for number, line in enumerate(handle, start=1) if line.strip()]


def unique_entries(entries: Sequence[ClipEntry]) -> list[ClipEntry]:
    """``entries`` without repeated clip ids (the first listing of a clip wins)."""
    seen: dict[str, ClipEntry] = {}
    for entry in entries:
        seen.setdefault(entry.clip_id, entry)
    return list(seen.values())


def relative_path(argument: str, value: str) -> PurePath:
    """``value`` as a path relative to the dataset root, refusing absolute paths and ``..``.

    Every file the datamodules read therefore lies below the ``root`` the user gave (this matters for
    pickled audio, whose loading runs code).
    """
    if not isinstance(value, str | os.PathLike) or not str(value).strip():
        raise config_error(argument, value, "a non-empty path relative to `root`")
    path = PurePath(str(value).strip())
    if path.is_absolute() or ".." in path.parts:
        raise config_error(
            argument,
            value,
            "a path relative to `root` without '..'",
            hint="every file is read from below `root`; link other folders into it if needed",
        )
    return path


def stratified_validation_split(labels: Sequence[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Splits positions ``0 .. len(labels) - 1`` into train and validation, stratified by label.

    The validation split holds ``round(len(labels) * fraction)`` positions (at least 1, at most all but
    one). They are shared among the classes in proportion to their sizes (largest remainders get the
    leftover places, ties to the smaller class index); within a class the positions are drawn with a
    ``torch.Generator`` seeded with ``seed``, so the same list, fraction and seed give the same split.

    Returns:
        The train positions and the validation positions, each sorted.

    Examples:
        >>> labels = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
        >>> train, val = stratified_validation_split(labels, 0.2, seed=0)
        >>> len(train), len(val)
        (8, 2)
    """
    total = len(labels)
    if total < 2:
        raise ValueError(f"need at least 2 samples to carve a validation split, got {total}")
    num_val = min(total - 1, max(1, round(total * fraction)))
    by_class: dict[int, list[int]] = {}
    for position, label in enumerate(labels):
        by_class.setdefault(label, []).append(position)
    classes = sorted(by_class)
    quotas = {label: len(by_class[label]) * num_val / total for label in classes}
    take = {label: math.floor(quotas[label]) for label in classes}
    leftover = num_val - sum(take.values())
    for label in sorted(classes, key=lambda c: (take[c] - quotas[c], c))[:leftover]:
        take[label] += 1
    generator = torch.Generator().manual_seed(seed)
    val: list[int] = []
    for label in classes:
        members = by_class[label]
        order = torch.randperm(len(members), generator=generator).tolist()
        val.extend(members[i] for i in order[: take[label]])
    chosen = set(val)
    return [p for p in range(total) if p not in chosen], sorted(val)
