"""Turns raw CREMA-D, AVE and Kinetics-Sounds downloads into the layouts the datamodules read.

Usage::

    python -m pdmp_lightning.prepare cremad --raw CREMA-D --out data/cremad [--splits OGM-GE/data/CREMAD]
    python -m pdmp_lightning.prepare ave --raw AVE_Dataset --out data/ave
    python -m pdmp_lightning.prepare kinetics_sounds --raw ks_videos --splits ks_splits --out data/ks

External programs: **ffmpeg** only (Debian/Ubuntu package ``ffmpeg``: ``apt-get install ffmpeg``), run
through :mod:`subprocess` with explicit argument lists (never a shell) to cut frames and to decode audio.
``--ffmpeg PATH`` points at another binary. Python packages: numpy, torch, tqdm, soundfile (reads the
decoded wav; ``torchaudio.load`` is not used because it needs torchcodec and FFmpeg's shared libraries)
and, for Kinetics-Sounds, torchaudio (``torchaudio.compliance.kaldi.fbank``):
``pip install "pdmp-lightning[audio]"``.

Layouts written under ``--out`` (those of the public preprocessing scripts, see the datamodules):

* ``cremad``: ``Image-01-FPS/<clip>/00001.jpg ...`` (1 fps over the whole video),
  ``AudioWAV/<clip>.wav`` (a byte copy of the raw wav; any other audio format is re-encoded to
  22,050 Hz mono 16-bit wav), ``train.csv`` and ``test.csv`` (rows ``clip,EMO``, no header).
* ``ave``: ``Image-01-FPS-SE/<id>/00001.jpg ...`` (1 fps inside the event segment
  ``[StartTime, EndTime]``), ``Audio-1004-SE/<id>.npy`` (float32 log spectrogram 257 x 1004, see
  :func:`ave_log_spectrogram`; ``.npy`` instead of the upstream pickle, so loading runs no code),
  ``trainSet.txt``, ``valSet.txt``, ``testSet.txt`` (and ``Annotations.txt`` when present), copied.
* ``kinetics_sounds``: ``visual/<name>/frame_00001.jpg ...`` (1 fps, at most 10 frames), ``audio/<name>.npy``
  (kaldi fbank 1024 x 128, see :func:`kinetics_fbank`), ``my_train.txt`` and ``my_test.txt``, copied.

Choices:

* Splits for CREMA-D: ``--splits DIR`` copies OGM-GE's ``train.csv``/``test.csv`` verbatim. Without it a
  split is drawn, stratified by emotion (the third ``_`` field of the clip id): per emotion the clip ids
  are sorted, shuffled with ``random.Random(seed)`` (emotions in alphabetical order) and the first
  ``floor(n * test_fraction + 0.5)`` go to ``test.csv``. The draw covers every raw clip that has a video,
  an audio file and an emotion, so a clip's side does not change when a rerun completes other clips; only
  clips whose outputs are complete get a row. The split is not speaker-independent (nor is OGM-GE's).
* Metadata (split and annotation files) is small: it is rewritten on every run when its content would
  change, so it always mirrors the source; ``--overwrite`` concerns frames and audio.
* Resuming: a clip whose outputs all exist (a frame folder with at least one jpg, a non-empty audio
  file) is skipped unless ``--overwrite``; a clip with some outputs redoes only the missing ones. Every
  file and frame folder is written under a temporary ``.<name>.<random>.prepare-tmp`` name and renamed
  into place, so an interrupted run leaves no half output; stale temporaries are removed on the next
  run (do not run two preparations into the same ``--out`` at once).
* Failures are per clip: reported as they happen, counted in the summary, never fatal. Clips whose raw
  inputs are missing are skipped with the reason. A clip that fails keeps the outputs it finished (whole
  files only; a rerun redoes the rest) and gets no row in a drawn CREMA-D split. The exit status is 0
  when at least one clip has complete outputs after the run, 1 when none has, 2 for a configuration
  error and 130 when interrupted.
* Audio is always decoded by ffmpeg to a temporary 16-bit PCM mono wav at the recipe's rate and read
  with soundfile. AVE audio is the event segment, repeated until it fills 10 s (also when shorter than
  1 s) and cut to 10 s. Kinetics-Sounds audio is the whole clip at 16 kHz.
* Frames: ffmpeg's ``fps=1`` filter, JPEG quality ``-q:v 2``, numbered from 1.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm import tqdm

from pdmp_lightning.errors import PDMPConfigurationError, config_error

__all__ = [
    "DATASETS",
    "ClipFailure",
    "PrepareSummary",
    "ave_log_spectrogram",
    "kinetics_fbank",
    "main",
    "prepare",
    "stratified_split",
]

DATASETS = ("cremad", "ave", "kinetics_sounds")
CREMAD_EMOTIONS = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")
CREMAD_AUDIO_RATE = 22_050
AVE_AUDIO_RATE = 16_000
AVE_SECONDS = 10
AVE_NPERSEG = 512
AVE_NOVERLAP = 353
AVE_TUKEY_ALPHA = 0.25
AVE_SHAPE = (257, 1004)
KS_AUDIO_RATE = 16_000
KS_MEL_BINS = 128
KS_TARGET_LENGTH = 1024
KS_MEAN = -4.503877
KS_STD = 5.141276
KS_MAX_FRAMES = 10
VIDEO_EXTENSIONS = (".mp4", ".flv", ".mkv", ".webm", ".avi", ".mov")
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".m4a", ".aac")
JPEG_QUALITY = "2"
TEMP_SUFFIX = ".prepare-tmp"
INSTALL_HINT = (
    "ffmpeg was not found: install it (Debian/Ubuntu: `apt-get install ffmpeg`; other systems: "
    "https://ffmpeg.org/download.html) or pass `--ffmpeg PATH` to point at an ffmpeg binary."
)
EXAMPLES_SHOWN = 3


class ClipFailure(Exception):
    """One clip could not be prepared; the run goes on with the next clip.

    Args:
        reason: A short reason shared by similar failures (the summary groups by it).
        detail: What exactly went wrong for this clip (a path, ffmpeg's message).
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# --------------------------------------------------------------------------------------------------
# ffmpeg


@dataclass(frozen=True)
class FFmpeg:
    """The ffmpeg program, called with explicit argument lists (no shell).

    Attributes:
        executable: The resolved path of the ffmpeg binary.
    """

    executable: str

    def run(self, arguments: Sequence[str]) -> None:
        """Runs ffmpeg quietly, overwriting its outputs.

        Args:
            arguments: The arguments after the global options (inputs, filters, outputs).

        Raises:
            ClipFailure: ffmpeg could not start or exited with a non-zero status.
        """
        command = [self.executable, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *arguments]
        try:
            completed = subprocess.run(command, capture_output=True, text=True, errors="replace", check=False)
        except OSError as err:
            raise ClipFailure("ffmpeg could not start", f"{self.executable}: {err}") from err
        if completed.returncode != 0:
            message = " | ".join(line.strip() for line in completed.stderr.splitlines() if line.strip())[:400]
            if "matches no streams" in message or "does not contain any stream" in message:
                raise ClipFailure("no audio stream", message)
            raise ClipFailure("ffmpeg error", f"exit status {completed.returncode}: {message or '(no message)'}")

    def extract_frames(
        self,
        video: Path,
        directory: Path,
        *,
        pattern: str = "%05d.jpg",
        start: float | None = None,
        duration: float | None = None,
        max_frames: int | None = None,
    ) -> int:
        """Writes 1 fps JPEG frames of ``video`` into ``directory``, numbered from 1.

        Args:
            video: The input video.
            directory: An existing (empty) folder for the frames.
            pattern: The ffmpeg image-sequence pattern of the frame names.
            start: Seconds to seek to before the first frame (None: the start).
            duration: Seconds of video to read from ``start`` (None: to the end).
            max_frames: Stop after this many frames (None: no limit).

        Returns:
            How many frames were written.

        Raises:
            ClipFailure: ffmpeg failed or wrote no frame.
        """
        arguments: list[str] = []
        if start is not None and start > 0:
            arguments += ["-ss", f"{start:g}"]
        arguments += ["-i", str(video.resolve())]
        if duration is not None:
            arguments += ["-t", f"{duration:g}"]
        arguments += ["-an", "-vf", "fps=1"]
        if max_frames is not None:
            arguments += ["-frames:v", str(max_frames)]
        target = str(directory.resolve()).replace("%", "%%") + os.sep + pattern
        arguments += ["-q:v", JPEG_QUALITY, "-start_number", "1", target]
        self.run(arguments)
        count = sum(1 for _ in directory.glob("*.jpg"))
        if count == 0:
            raise ClipFailure("no frames extracted", f"ffmpeg wrote no frame for {video}")
        return count

    def extract_audio(
        self, source: Path, sample_rate: int, *, start: float | None = None, duration: float | None = None
    ) -> np.ndarray:
        """Decodes the first audio stream of ``source`` to mono float32 samples at ``sample_rate``.

        ffmpeg writes a temporary 16-bit PCM mono wav, which soundfile reads.

        Args:
            source: A video or audio file.
            sample_rate: The rate to resample to, in Hz.
            start: Seconds to seek to first (None: the start).
            duration: Seconds to decode from ``start`` (None: to the end).

        Returns:
            The samples in [-1, 1], shape ``[n]``.

        Raises:
            ClipFailure: ffmpeg failed, the file has no audio stream or no samples.
        """
        soundfile = _soundfile()
        with tempfile.TemporaryDirectory(prefix="pdmp-prepare-") as scratch:
            wav = Path(scratch) / "audio.wav"
            arguments: list[str] = []
            if start is not None and start > 0:
                arguments += ["-ss", f"{start:g}"]
            arguments += ["-i", str(source.resolve())]
            if duration is not None:
                arguments += ["-t", f"{duration:g}"]
            arguments += ["-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(sample_rate)]
            arguments += ["-c:a", "pcm_s16le", "-f", "wav", str(wav)]
            self.run(arguments)
            samples, _ = soundfile.read(str(wav), dtype="float32", always_2d=True)
        mono = np.ascontiguousarray(np.asarray(samples, dtype=np.float32).mean(axis=1))
        if mono.size == 0:
            raise ClipFailure("no audio samples", f"the audio of {source} is empty")
        return mono

    def encode_wav(self, source: Path, target: Path, sample_rate: int) -> None:
        """Re-encodes ``source``'s audio to a 16-bit PCM mono wav at ``sample_rate``.

        Args:
            source: Any audio (or video) file ffmpeg reads.
            target: The wav to write (its name need not end in ``.wav``).
            sample_rate: The rate in Hz.
        """
        self.run(
            [
                *("-i", str(source.resolve()), "-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(sample_rate)),
                *("-c:a", "pcm_s16le", "-f", "wav", str(target.resolve())),
            ]
        )


def find_ffmpeg(program: str = "ffmpeg") -> FFmpeg:
    """Resolves the ffmpeg binary with :func:`shutil.which`.

    Args:
        program: A program name on ``PATH`` or a path to an executable.

    Returns:
        The resolved program.

    Raises:
        PDMPConfigurationError: It cannot be found or is not executable.
    """
    resolved = shutil.which(program)
    if resolved is None:
        raise config_error(
            "--ffmpeg", program, "the ffmpeg program on PATH or the path of an ffmpeg executable", INSTALL_HINT
        )
    return FFmpeg(resolved)


def _soundfile() -> Any:
    try:
        import soundfile
    except ImportError as err:  # pragma: no cover - soundfile ships with the [audio] extra
        raise ImportError('prepare reads decoded audio with soundfile: pip install "pdmp-lightning[audio]"') from err
    return soundfile


def _kaldi() -> Any:
    try:
        import torchaudio.compliance.kaldi as kaldi
    except ImportError as err:  # pragma: no cover - torchaudio ships with the [audio] extra
        raise ImportError(
            'kinetics_sounds fbanks need torchaudio.compliance.kaldi: pip install "pdmp-lightning[audio]"'
        ) from err
    return kaldi


# --------------------------------------------------------------------------------------------------
# audio features


def _periodic_tukey(length: int, alpha: float) -> torch.Tensor:
    """scipy's ``get_window(("tukey", alpha), length)`` (the periodic window), in float64."""
    m = length + 1
    n = np.arange(m, dtype=np.float64)
    width = int(np.floor(alpha * (m - 1) / 2.0))
    window = np.ones(m, dtype=np.float64)
    window[: width + 1] = 0.5 * (1 + np.cos(np.pi * (-1 + 2.0 * n[: width + 1] / alpha / (m - 1))))
    tail = n[m - width - 1 :]
    window[m - width - 1 :] = 0.5 * (1 + np.cos(np.pi * (-2.0 / alpha + 1 + 2.0 * tail / alpha / (m - 1))))
    return torch.from_numpy(window[:-1].copy())


def ave_log_spectrogram(waveform: np.ndarray, sample_rate: int = AVE_AUDIO_RATE) -> np.ndarray:
    """The AVE audio feature: a per-clip z-scored log power spectrogram, 257 x 1004 at 16 kHz.

    The recipe of the public AVE preprocessing (``scipy.signal.spectrogram`` with its defaults),
    computed with :func:`torch.stft` in float64: the waveform is repeated until it fills 10 s and cut
    there, clipped to [-1, 1]; segments of 512 samples every 159 (``noverlap`` 353), each minus its mean
    (``detrend="constant"``), a periodic Tukey(0.25) window, one-sided power spectral density; then
    ``log(psd + 1e-7)`` and ``(x - mean) / (std + 1e-9)`` over the whole clip.

    Args:
        waveform: Mono samples in [-1, 1], any length > 0.
        sample_rate: Their rate in Hz (16,000 for the 257 x 1004 shape).

    Returns:
        float32 array ``[257, frames]`` (``[257, 1004]`` at 16 kHz).

    Raises:
        ValueError: The waveform is empty.

    >>> ave_log_spectrogram(np.zeros(8000, dtype=np.float32)).shape
    (257, 1004)
    """
    samples = torch.as_tensor(np.asarray(waveform, dtype=np.float64)).flatten()
    if samples.numel() == 0:
        raise ValueError("ave_log_spectrogram needs at least one sample")
    length = AVE_SECONDS * sample_rate
    samples = samples.repeat(math.ceil(length / samples.numel()))[:length].clamp(-1.0, 1.0)
    hop = AVE_NPERSEG - AVE_NOVERLAP
    window = _periodic_tukey(AVE_NPERSEG, AVE_TUKEY_ALPHA)
    spectrum = torch.stft(
        samples,
        n_fft=AVE_NPERSEG,
        hop_length=hop,
        win_length=AVE_NPERSEG,
        window=window,
        center=False,
        onesided=True,
        return_complex=True,
    )
    # Removing each segment's mean before the window is linear: subtract mean * FFT(window) per frame.
    means = samples.unfold(0, AVE_NPERSEG, hop).mean(dim=1)
    spectrum = spectrum - torch.fft.rfft(window)[:, None] * means[None, :]
    power = spectrum.abs().square() / (sample_rate * window.square().sum())
    power[1:-1] *= 2.0  # one-sided density: every bin but DC and Nyquist counts twice
    log_power = torch.log(power + 1e-7)
    normalised = (log_power - log_power.mean()) / (log_power.std(correction=0) + 1e-9)
    result: np.ndarray = normalised.to(torch.float32).numpy()
    return result


def kinetics_fbank(waveform: np.ndarray, sample_rate: int = KS_AUDIO_RATE) -> np.ndarray:
    """The Kinetics-Sounds audio feature: a normalised kaldi fbank, 1024 x 128.

    The AST recipe: the waveform minus its mean, ``torchaudio.compliance.kaldi.fbank`` (128 mel bins,
    10 ms shift, 25 ms Hanning window, ``htk_compat``, no energy, no dither), zero-padded or cut to 1024
    frames, then ``(x - (-4.503877)) / (2 * 5.141276)`` (padding happens before the normalisation).

    Args:
        waveform: Mono samples in [-1, 1], at least one 25 ms window long.
        sample_rate: Their rate in Hz.

    Returns:
        float32 array ``[1024, 128]``.

    >>> kinetics_fbank(np.zeros(16000, dtype=np.float32)).shape
    (1024, 128)
    """
    kaldi = _kaldi()
    samples = torch.as_tensor(np.asarray(waveform, dtype=np.float32)).reshape(1, -1)
    samples = samples - samples.mean()
    fbank = kaldi.fbank(
        samples,
        htk_compat=True,
        sample_frequency=float(sample_rate),
        use_energy=False,
        window_type="hanning",
        num_mel_bins=KS_MEL_BINS,
        dither=0.0,
        frame_shift=10.0,
    )
    frames = fbank.shape[0]
    if frames < KS_TARGET_LENGTH:
        fbank = torch.nn.functional.pad(fbank, (0, 0, 0, KS_TARGET_LENGTH - frames))
    fbank = fbank[:KS_TARGET_LENGTH]
    result: np.ndarray = ((fbank - KS_MEAN) / (2 * KS_STD)).to(torch.float32).numpy()
    return result


# --------------------------------------------------------------------------------------------------
# atomic outputs


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


# --------------------------------------------------------------------------------------------------
# clips and the run


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


# --------------------------------------------------------------------------------------------------
# raw files


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


def cremad_emotion(clip: str) -> str | None:
    """The emotion of a CREMA-D clip id (its third ``_`` field), or None when it names none.

    >>> cremad_emotion("1088_IOM_NEU_XX")
    'NEU'
    """
    parts = clip.split("_")
    if len(parts) >= 3 and parts[2].upper() in CREMAD_EMOTIONS:
        return parts[2].upper()
    return None


def stratified_split(clips: Sequence[str], test_fraction: float, seed: int) -> dict[str, str]:
    """Assigns CREMA-D clips to ``"train"`` or ``"test"``, stratified by emotion.

    Per emotion (alphabetical order) the sorted clip ids are shuffled with one ``random.Random(seed)``
    and the first ``floor(n * test_fraction + 0.5)`` go to test.

    Args:
        clips: Clip ids whose third ``_`` field is an emotion.
        test_fraction: The share of each emotion that goes to test, in (0, 1).
        seed: The shuffle's seed.

    Returns:
        ``{clip: "train" | "test"}``.

    >>> split = stratified_split([f"10{i}_IEO_ANG_HI" for i in range(10)], 0.2, 0)
    >>> sorted(split.values()).count("test")
    2
    """
    groups: dict[str, list[str]] = {}
    for clip in sorted(set(clips)):
        groups.setdefault(cremad_emotion(clip) or "", []).append(clip)
    generator = random.Random(seed)
    assignment: dict[str, str] = {}
    for emotion in sorted(groups):
        members = groups[emotion]
        generator.shuffle(members)
        test_count = math.floor(len(members) * test_fraction + 0.5)
        for index, clip in enumerate(members):
            assignment[clip] = "test" if index < test_count else "train"
    return assignment


def _missing_rows_line(name: str, clip_ids: Sequence[str], ready: set[str]) -> str:
    missing = [clip for clip in clip_ids if clip not in ready]
    line = f"{name}: {len(clip_ids)} rows"
    if missing:
        line += f", {len(missing)} name clips without complete outputs (e.g. {', '.join(missing[:EXAMPLES_SHOWN])})"
    return line


def _plan_cremad(raw: Path, out: Path, ffmpeg: FFmpeg, splits: Path | None, test_fraction: float, seed: int) -> _Plan:
    audio_folder, video_folder = raw / "AudioWAV", raw / "VideoFlash"
    for folder in (audio_folder, video_folder):
        if not folder.is_dir():
            raise config_error(
                "--raw",
                str(raw),
                "a CREMA-D folder holding AudioWAV/<clip>.wav and VideoFlash/<clip>.flv",
                f"{folder} does not exist",
            )
    if splits is not None:
        for name in ("train.csv", "test.csv"):
            if not (splits / name).is_file():
                raise config_error(
                    "--splits", str(splits), "a folder holding OGM-GE's train.csv and test.csv", f"no {splits / name}"
                )
    audio, audio_duplicates = _index(audio_folder, AUDIO_EXTENSIONS)
    video, video_duplicates = _index(video_folder, VIDEO_EXTENSIONS)
    notes = [
        f"{count} {kind} files share a clip id with another format; the first of {extensions} is used"
        for count, kind, extensions in (
            (audio_duplicates, "audio", AUDIO_EXTENSIONS),
            (video_duplicates, "video", VIDEO_EXTENSIONS),
        )
        if count
    ]
    frames_root, audio_root = out / "Image-01-FPS", out / "AudioWAV"

    def make_frames(video_path: Path) -> Callable[[Path], None]:
        def write(folder: Path) -> None:
            ffmpeg.extract_frames(video_path, folder)

        return write

    def make_audio(audio_path: Path) -> Callable[[Path], None]:
        def write(target: Path) -> None:
            if audio_path.suffix.lower() != ".wav":
                ffmpeg.encode_wav(audio_path, target, CREMAD_AUDIO_RATE)
                return
            try:
                frames = _soundfile().info(str(audio_path)).frames
            except RuntimeError as err:
                raise ClipFailure("unreadable wav", f"{audio_path}: {err}") from err
            if frames == 0:
                raise ClipFailure("empty wav", str(audio_path))
            shutil.copyfile(audio_path, target)

        return write

    jobs: list[ClipJob] = []
    for clip in sorted(set(audio) | set(video)):
        outputs: tuple[Output, ...] = ()
        skip, detail = None, ""
        if cremad_emotion(clip) is None:
            skip, detail = "clip id names no CREMA-D emotion", f"third '_' field not in {', '.join(CREMAD_EMOTIONS)}"
        elif clip not in video:
            skip, detail = "video not found", str(video_folder / f"{clip}.flv")
        elif clip not in audio:
            skip, detail = "audio not found", str(audio_folder / f"{clip}.wav")
        else:
            outputs = (
                Output(frames_root / clip, "frames", make_frames(video[clip])),
                Output(audio_root / f"{clip}.wav", "file", make_audio(audio[clip])),
            )
        jobs.append(ClipJob(clip, outputs, skip, detail))
    usable = [job.clip for job in jobs if job.skip is None]

    def finish(ready: set[str]) -> list[str]:
        lines: list[str] = []
        if splits is not None:
            for name in ("train.csv", "test.csv"):
                wrote = _copy_if_changed(splits / name, out / name)
                ids = [line.split(",")[0].strip() for line in _read_lines(splits / name)]
                state = "copied" if wrote else "unchanged"
                lines.append(f"{_missing_rows_line(name, ids, ready)} [{state} from {splits}]")
            return lines
        assignment = stratified_split(usable, test_fraction, seed)
        for side in ("train", "test"):
            rows = [clip for clip in sorted(assignment) if assignment[clip] == side and clip in ready]
            text = "".join(f"{clip},{cremad_emotion(clip)}\n" for clip in rows)
            wrote = _write_text_if_changed(out / f"{side}.csv", text)
            lines.append(
                f"{side}.csv: {len(rows)} rows [{'written' if wrote else 'unchanged'}; stratified by emotion, "
                f"test fraction {test_fraction:g}, seed {seed}]"
            )
        return lines

    return _Plan(jobs, finish, notes, [out, frames_root, audio_root])


AVE_SPLITS = ("trainSet.txt", "valSet.txt", "testSet.txt")


def _parse_ave(path: Path, segments: dict[str, tuple[float, float]], notes: list[str]) -> list[str]:
    """Reads ``Category&VideoID&Quality&StartTime&EndTime`` lines into ``segments`` (first wins).

    Returns:
        The video ids in file order.
    """
    ids: list[str] = []
    bad: list[int] = []
    for number, line in enumerate(_read_lines(path), start=1):
        fields = [part.strip() for part in line.split("&")]
        try:
            if len(fields) < 5:
                raise ValueError(line)
            start, end = float(fields[3]), float(fields[4])
        except ValueError:
            if number > 1:  # the first line may be the header
                bad.append(number)
            continue
        ids.append(fields[1])
        segments.setdefault(fields[1], (start, end))
    if bad:
        notes.append(f"{path.name}: {len(bad)} malformed lines ignored (lines {', '.join(map(str, bad[:5]))})")
    return ids


def _plan_ave(raw: Path, out: Path, ffmpeg: FFmpeg, splits: Path | None) -> _Plan:
    video_folder = raw / "AVE"
    if not video_folder.is_dir():
        raise config_error(
            "--raw",
            str(raw),
            "an AVE folder holding AVE/<id>.mp4 and the annotation files",
            f"{video_folder} is missing",
        )
    split_folder = splits if splits is not None else raw
    missing = [name for name in AVE_SPLITS if not (split_folder / name).is_file()]
    if missing:
        raise config_error(
            "--splits" if splits is not None else "--raw",
            str(split_folder),
            f"a folder holding {', '.join(AVE_SPLITS)}",
            f"missing {', '.join(missing)}",
        )
    annotations = next(
        (folder / "Annotations.txt" for folder in (split_folder, raw) if (folder / "Annotations.txt").is_file()), None
    )
    notes: list[str] = []
    segments: dict[str, tuple[float, float]] = {}
    if annotations is not None:
        _parse_ave(annotations, segments, notes)
    split_ids = {name: _parse_ave(split_folder / name, segments, notes) for name in AVE_SPLITS}
    videos, duplicates = _index(video_folder, VIDEO_EXTENSIONS)
    unannotated = sorted(set(videos) - set(segments))
    if unannotated:
        notes.append(f"{len(unannotated)} videos have no annotation and are ignored (e.g. {unannotated[0]})")
    if duplicates:
        notes.append(f"{duplicates} videos share an id with another format; the first of {VIDEO_EXTENSIONS} is used")
    frames_root, audio_root = out / "Image-01-FPS-SE", out / "Audio-1004-SE"

    def make_frames(video: Path, start: float, end: float) -> Callable[[Path], None]:
        def write(folder: Path) -> None:
            ffmpeg.extract_frames(video, folder, start=start, duration=end - start)

        return write

    def make_audio(video: Path, start: float, end: float) -> Callable[[Path], None]:
        def write(target: Path) -> None:
            waveform = ffmpeg.extract_audio(video, AVE_AUDIO_RATE, start=start, duration=end - start)
            spectrogram = ave_log_spectrogram(waveform, AVE_AUDIO_RATE)
            if spectrogram.shape != AVE_SHAPE:  # pragma: no cover - fixed by the recipe at 16 kHz
                raise ClipFailure("wrong spectrogram shape", f"{spectrogram.shape} instead of {AVE_SHAPE}")
            _save_npy(spectrogram, target)

        return write

    jobs: list[ClipJob] = []
    for clip in sorted(segments):
        start, end = segments[clip]
        outputs: tuple[Output, ...] = ()
        skip, detail = None, ""
        if _unsafe_name(clip):
            skip, detail = "unsafe video id", repr(clip)
        elif clip not in videos:
            skip, detail = "video not found", str(video_folder / f"{clip}.mp4")
        elif not end > start >= 0:
            skip, detail = "empty event segment", f"StartTime {start:g}, EndTime {end:g}"
        else:
            outputs = (
                Output(frames_root / clip, "frames", make_frames(videos[clip], start, end)),
                Output(audio_root / f"{clip}.npy", "file", make_audio(videos[clip], start, end)),
            )
        jobs.append(ClipJob(clip, outputs, skip, detail))

    def finish(ready: set[str]) -> list[str]:
        lines: list[str] = []
        for name in AVE_SPLITS:
            wrote = _copy_if_changed(split_folder / name, out / name)
            state = "copied" if wrote else "unchanged"
            lines.append(f"{_missing_rows_line(name, split_ids[name], ready)} [{state}]")
        if annotations is not None:
            wrote = _copy_if_changed(annotations, out / "Annotations.txt")
            lines.append(f"Annotations.txt: {'copied' if wrote else 'unchanged'}")
        return lines

    return _Plan(jobs, finish, notes, [out, frames_root, audio_root])


KS_SPLITS = ("my_train.txt", "my_test.txt")


def _ks_name(line: str) -> str:
    """The clip name of a Kinetics-Sounds split line (csv ``name,10,label`` or space separated)."""
    return (line.split(",")[0] if "," in line else line.split()[0]).strip()


def _plan_kinetics_sounds(raw: Path, out: Path, ffmpeg: FFmpeg, splits: Path | None) -> _Plan:
    split_folder = splits if splits is not None else raw
    missing = [name for name in KS_SPLITS if not (split_folder / name).is_file()]
    if missing:
        raise config_error(
            "--splits" if splits is not None else "--raw",
            str(split_folder),
            f"a folder holding {' and '.join(KS_SPLITS)}",
            f"missing {', '.join(missing)}; pass --splits DIR when they are not beside the videos",
        )
    split_ids = {name: [_ks_name(line) for line in _read_lines(split_folder / name)] for name in KS_SPLITS}
    videos, duplicates = _index(raw, VIDEO_EXTENSIONS, recursive=True)
    notes: list[str] = []
    if duplicates:
        notes.append(f"{duplicates} videos share a name with another one under --raw; the first (sorted) is used")
    unlisted = len(set(videos) - {name for ids in split_ids.values() for name in ids})
    if unlisted:
        notes.append(f"{unlisted} videos under --raw are in no split file and are ignored")

    def make_frames(video: Path) -> Callable[[Path], None]:
        def write(folder: Path) -> None:
            ffmpeg.extract_frames(video, folder, pattern="frame_%05d.jpg", max_frames=KS_MAX_FRAMES)

        return write

    def make_audio(video: Path) -> Callable[[Path], None]:
        def write(target: Path) -> None:
            waveform = ffmpeg.extract_audio(video, KS_AUDIO_RATE)
            if waveform.size < KS_AUDIO_RATE // 40:
                raise ClipFailure("audio too short", f"{waveform.size} samples, less than one 25 ms window")
            _save_npy(kinetics_fbank(waveform, KS_AUDIO_RATE), target)

        return write

    jobs: list[ClipJob] = []
    for clip in sorted({name for ids in split_ids.values() for name in ids}):
        outputs: tuple[Output, ...] = ()
        skip, detail = None, ""
        if _unsafe_name(clip) or clip in KS_SPLITS:
            skip, detail = "unsafe clip name", repr(clip)
        elif clip not in videos:
            skip, detail = "video not found", f"no {clip}.mp4 (or {', '.join(VIDEO_EXTENSIONS[1:])}) under {raw}"
        else:
            outputs = (
                # The subfolders KineticsSoundsDataModule reads by default (frames_dir, audio_dir).
                Output(out / "visual" / clip, "frames", make_frames(videos[clip])),
                Output(out / "audio" / f"{clip}.npy", "file", make_audio(videos[clip])),
            )
        jobs.append(ClipJob(clip, outputs, skip, detail))

    def finish(ready: set[str]) -> list[str]:
        lines: list[str] = []
        for name in KS_SPLITS:
            wrote = _copy_if_changed(split_folder / name, out / name)
            lines.append(f"{_missing_rows_line(name, split_ids[name], ready)} [{'copied' if wrote else 'unchanged'}]")
        return lines

    return _Plan(jobs, finish, notes, [out])


# --------------------------------------------------------------------------------------------------
# entry points


def prepare(
    dataset: str,
    raw: Path | str,
    out: Path | str,
    *,
    ffmpeg: str = "ffmpeg",
    splits: Path | str | None = None,
    overwrite: bool = False,
    test_fraction: float | None = None,
    seed: int | None = None,
    limit: int | None = None,
    workers: int = 1,
    progress: bool = True,
) -> PrepareSummary:
    """Prepares one dataset; see the module docstring for the layouts and choices.

    Args:
        dataset: ``cremad``, ``ave`` or ``kinetics_sounds``.
        raw: The raw download.
        out: Where the prepared layout goes (created; must differ from ``raw``).
        ffmpeg: The ffmpeg program name or path.
        splits: Folder of the split files (CREMA-D: OGM-GE's csv files, else a drawn split; AVE and
            Kinetics-Sounds: default ``raw``).
        overwrite: Redo frames and audio that already exist.
        test_fraction: CREMA-D without ``splits``: the test share per emotion (default 0.1).
        seed: CREMA-D without ``splits``: the split's seed (default 0).
        limit: Prepare only the first ``limit`` clips (sorted ids), for a trial run.
        workers: Clips prepared at once (threads; ffmpeg does the heavy work).
        progress: Show a progress bar on stderr.

    Returns:
        The summary; ``summary.ready`` counts clips with complete outputs.

    Raises:
        PDMPConfigurationError: An argument is wrong (names the argument, the value and what is allowed).
        ImportError: soundfile (or torchaudio for Kinetics-Sounds) is missing.
    """
    started = time.perf_counter()
    if dataset not in DATASETS:
        raise config_error("dataset", dataset, f"one of {', '.join(DATASETS)}")
    program = find_ffmpeg(ffmpeg)
    raw_path, out_path = Path(raw).expanduser(), Path(out).expanduser()
    if not raw_path.is_dir():
        raise config_error(
            "--raw", str(raw), f"an existing folder holding the raw {dataset} download", "see `--help` for the layout"
        )
    if out_path.exists() and not out_path.is_dir():
        raise config_error("--out", str(out), "a folder (created when missing)", "it is an existing file")
    if out_path.resolve() == raw_path.resolve():
        raise config_error("--out", str(out), "a folder different from --raw", "write the prepared layout elsewhere")
    splits_path = Path(splits).expanduser() if splits is not None else None
    if splits_path is not None and not splits_path.is_dir():
        raise config_error("--splits", str(splits), "an existing folder holding the split files")
    if dataset != "cremad" or splits_path is not None:
        for name, given in (("--test-fraction", test_fraction), ("--seed", seed)):
            if given is not None:
                raise config_error(
                    name, given, "no value here", "it only applies to cremad without --splits (a drawn split)"
                )
    fraction = 0.1 if test_fraction is None else test_fraction
    if not 0.0 < fraction < 1.0:
        raise config_error("--test-fraction", test_fraction, "a number strictly between 0 and 1")
    if limit is not None and limit < 1:
        raise config_error("--limit", limit, "a positive number of clips")
    if workers < 1:
        raise config_error("--workers", workers, "a positive number of threads")
    _soundfile()
    if dataset == "kinetics_sounds":
        _kaldi()

    if dataset == "cremad":
        plan = _plan_cremad(raw_path, out_path, program, splits_path, fraction, 0 if seed is None else seed)
    elif dataset == "ave":
        plan = _plan_ave(raw_path, out_path, program, splits_path)
    else:
        plan = _plan_kinetics_sounds(raw_path, out_path, program, splits_path)
    out_path.mkdir(parents=True, exist_ok=True)
    stale = sum(_remove_stale_temporaries(folder) for folder in plan.folders)
    if stale:
        plan.notes.append(f"removed {stale} temporaries left by an interrupted run")
    jobs = plan.jobs[:limit] if limit is not None else plan.jobs
    if limit is not None and len(plan.jobs) > limit:
        plan.notes.append(f"--limit {limit}: {len(plan.jobs) - limit} further clips not looked at")
    results = _run_jobs(jobs, overwrite, workers, progress, f"prepare {dataset}")
    ready = {result.clip for result in results if result.status in ("processed", "complete")}
    summary = PrepareSummary(dataset, raw_path, out_path, results, plan.finish(ready), plan.notes)
    summary.seconds = time.perf_counter() - started
    return summary


def build_parser() -> argparse.ArgumentParser:
    """The command line parser of ``python -m pdmp_lightning.prepare``."""
    summary, _, rest = (__doc__ or "").partition("\n")
    parser = argparse.ArgumentParser(
        prog="python -m pdmp_lightning.prepare",
        description=summary + " Needs the external program ffmpeg (Debian/Ubuntu: `apt-get install ffmpeg`).",
        epilog=re.sub(r":(?:mod|func):", "", rest.strip().replace("``", "`").replace("**", "")),  # layouts, choices
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dataset", choices=DATASETS, help="Which dataset the raw folder holds.")
    parser.add_argument(
        "--raw",
        type=Path,
        required=True,
        metavar="DIR",
        help="The raw download: cremad: AudioWAV/ and VideoFlash/; ave: AVE/<id>.mp4 and the annotation "
        "files; kinetics_sounds: the videos (searched recursively) and, unless --splits, my_train.txt/my_test.txt.",
    )
    parser.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="Where the prepared layout goes (created)."
    )
    parser.add_argument(
        "--splits",
        type=Path,
        default=None,
        metavar="DIR",
        help="Folder of the split files. cremad: OGM-GE's train.csv/test.csv, copied (default: a split drawn "
        "with --test-fraction and --seed). ave, kinetics_sounds: default --raw.",
    )
    parser.add_argument(
        "--ffmpeg",
        default="ffmpeg",
        metavar="PATH",
        help="The ffmpeg program (external, required; default: `ffmpeg` on PATH).",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="Redo frames and audio that exist (default: skip them, resume)."
    )
    parser.add_argument(
        "--test-fraction",
        type=float,
        default=None,
        metavar="F",
        help="cremad without --splits: share of each emotion put in test.csv (default 0.1).",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        metavar="N",
        help="cremad without --splits: seed of the drawn split (default 0).",
    )
    parser.add_argument(
        "--limit", type=int, default=None, metavar="N", help="Prepare only the first N clips (a trial run)."
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="Clips prepared at once (threads running ffmpeg; default 1).",
    )
    parser.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command line.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).

    Returns:
        0 when at least one clip has complete outputs, 1 when none has, 2 for a configuration error,
        130 when interrupted.
    """
    arguments = build_parser().parse_args(argv)
    options: dict[str, Any] = {
        "ffmpeg": arguments.ffmpeg,
        "splits": arguments.splits,
        "overwrite": arguments.overwrite,
        "test_fraction": arguments.test_fraction,
        "seed": arguments.seed,
        "limit": arguments.limit,
        "workers": arguments.workers,
        "progress": not arguments.no_progress,
    }
    try:
        summary = prepare(arguments.dataset, arguments.raw, arguments.out, **options)
    except (PDMPConfigurationError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished outputs are kept; run the same command again to resume", file=sys.stderr)
        return 130
    print(summary.format())
    return 0 if summary.ready else 1


if __name__ == "__main__":
    raise SystemExit(main())
