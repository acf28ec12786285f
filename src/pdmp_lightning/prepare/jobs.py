"""Clips and the run: what each clip produces, running the clips (resuming, per-clip failures), the summary."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from pdmp_lightning.prepare.ffmpeg import ClipFailure
from pdmp_lightning.prepare.files import _atomic_directory, _atomic_file

__all__ = ["EXAMPLES_SHOWN", "ClipJob", "ClipResult", "Output", "PrepareSummary"]

EXAMPLES_SHOWN = 3


@dataclass(frozen=True)
class Output:
    """One output of a clip.

    Attributes:
        path: Where it lands.
        kind: ``"frames"`` (a folder of jpgs) or ``"file"``.
        make: Writes it into the temporary path it is given (an empty folder, or a file to replace).
    """

    path: Path
    kind: Literal["frames", "file"]
    make: Callable[[Path], None]

    def complete(self) -> bool:
        """Whether it exists: a folder with at least one jpg, or a non-empty file."""
        if self.kind == "frames":
            return self.path.is_dir() and any(self.path.glob("*.jpg"))
        return self.path.is_file() and self.path.stat().st_size > 0


@dataclass(frozen=True)
class ClipJob:
    """A clip to prepare, or to skip with ``skip`` as the reason.

    Attributes:
        clip: The clip id.
        outputs: What it produces.
        skip: Why it cannot be prepared (a missing input), or None.
        skip_detail: The path or value behind ``skip``.
    """

    clip: str
    outputs: tuple[Output, ...]
    skip: str | None = None
    skip_detail: str = ""


@dataclass(frozen=True)
class ClipResult:
    """What happened to one clip.

    Attributes:
        clip: The clip id.
        status: ``processed`` (wrote something), ``complete`` (outputs existed), ``skipped`` or ``failed``.
        reason: Why it was skipped or failed.
        detail: The path or message behind ``reason``.
        written: The outputs written in this run.
    """

    clip: str
    status: Literal["processed", "complete", "skipped", "failed"]
    reason: str = ""
    detail: str = ""
    written: tuple[Path, ...] = ()


def _run_clip(job: ClipJob, overwrite: bool) -> ClipResult:
    if job.skip is not None:
        return ClipResult(job.clip, "skipped", job.skip, job.skip_detail)
    pending = [output for output in job.outputs if overwrite or not output.complete()]
    if not pending:
        return ClipResult(job.clip, "complete")
    written: list[Path] = []
    try:
        for output in pending:
            if output.kind == "frames":
                with _atomic_directory(output.path) as folder:
                    output.make(folder)
                    if not any(folder.glob("*.jpg")):
                        raise ClipFailure("no frames extracted", str(output.path))
            else:
                with _atomic_file(output.path) as temporary:
                    output.make(temporary)
                    if temporary.stat().st_size == 0:
                        raise ClipFailure("empty output", str(output.path))
            written.append(output.path)
    except ClipFailure as failure:
        return ClipResult(job.clip, "failed", failure.reason, failure.detail, tuple(written))
    except Exception as err:  # a bad clip must not end the run: report it and go on
        return ClipResult(job.clip, "failed", f"unexpected {type(err).__name__}", str(err), tuple(written))
    return ClipResult(job.clip, "processed", written=tuple(written))


def _run_jobs(jobs: Sequence[ClipJob], overwrite: bool, workers: int, progress: bool, label: str) -> list[ClipResult]:
    results: list[ClipResult] = []
    with tqdm(total=len(jobs), desc=label, unit="clip", disable=not progress, file=sys.stderr) as bar:

        def record(result: ClipResult) -> None:
            results.append(result)
            bar.update(1)
            if result.status == "failed":
                bar.write(f"failed {result.clip}: {result.reason}: {result.detail}", file=sys.stderr)

        if workers <= 1:
            for job in jobs:
                record(_run_clip(job, overwrite))
        else:
            pool = ThreadPoolExecutor(max_workers=workers)
            try:
                futures = [pool.submit(_run_clip, job, overwrite) for job in jobs]
                for future in as_completed(futures):
                    record(future.result())
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
    return sorted(results, key=lambda result: result.clip)


@dataclass
class PrepareSummary:
    """The outcome of a preparation run.

    Attributes:
        dataset: The dataset name.
        raw: The raw folder.
        out: The output folder.
        results: One result per clip, sorted by clip id.
        metadata: Lines about the split and annotation files.
        notes: Lines about the raw files (ignored lines, unmatched videos, ...).
        seconds: Wall time of the run.
    """

    dataset: str
    raw: Path
    out: Path
    results: list[ClipResult] = field(default_factory=list)
    metadata: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def clips(self, status: str) -> list[ClipResult]:
        """The results with ``status``."""
        return [result for result in self.results if result.status == status]

    @property
    def ready(self) -> int:
        """How many clips have complete outputs (prepared now or before)."""
        return len(self.clips("processed")) + len(self.clips("complete"))

    def format(self) -> str:
        """A plain-text report for the console."""
        lines = [
            f"prepare {self.dataset}: {self.raw} -> {self.out} ({self.seconds:.1f} s)",
            f"  clips found:      {len(self.results)}",
            f"  processed:        {len(self.clips('processed'))}",
            f"  already complete: {len(self.clips('complete'))} (skipped; --overwrite redoes them)",
        ]
        for status in ("skipped", "failed"):
            chosen = self.clips(status)
            lines.append(f"  {status + ':':<17} {len(chosen)}")
            reasons: dict[str, list[ClipResult]] = {}
            for result in chosen:
                reasons.setdefault(result.reason, []).append(result)
            for reason, members in sorted(reasons.items(), key=lambda item: -len(item[1])):
                shown_clips = "; ".join(
                    f"{m.clip}" + (f" ({m.detail})" if m.detail else "") for m in members[:EXAMPLES_SHOWN]
                )
                lines.append(f"    - {reason}: {len(members)}, e.g. {shown_clips}")
        lines += [f"  {line}" for line in self.metadata]
        lines += [f"  note: {line}" for line in self.notes]
        examples = [path for result in self.clips("processed") for path in result.written][: 2 * EXAMPLES_SHOWN]
        if examples:
            lines.append("  example outputs:")
            for path in examples:
                shown = min(path.glob("*.jpg"), default=path) if path.is_dir() else path
                lines.append(f"    {shown}")
        if not self.ready:
            lines.append("  nothing usable was prepared: see the reasons above")
        return "\n".join(lines)


@dataclass
class _Plan:
    jobs: list[ClipJob]
    finish: Callable[[set[str]], list[str]]
    notes: list[str]
    folders: list[Path]
