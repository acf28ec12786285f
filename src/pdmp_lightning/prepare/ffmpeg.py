"""The ffmpeg program, run through ``subprocess`` with explicit argument lists (never a shell)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pdmp_lightning.errors import config_error
from pdmp_lightning.prepare.audio import _soundfile

__all__ = ["INSTALL_HINT", "JPEG_QUALITY", "ClipFailure", "FFmpeg", "find_ffmpeg"]

JPEG_QUALITY = "2"
INSTALL_HINT = (
    "ffmpeg was not found: install it (Debian/Ubuntu: `apt-get install ffmpeg`; other systems: "
    "https://ffmpeg.org/download.html) or pass `--ffmpeg PATH` to point at an ffmpeg binary."
)


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
        fps: float | None = 1.0,
    ) -> int:
        """Writes JPEG frames of ``video`` (1 fps by default) into ``directory``, numbered from 1.

        Args:
            video: The input video.
            directory: An existing (empty) folder for the frames.
            pattern: The ffmpeg image-sequence pattern of the frame names.
            start: Seconds to seek to before the first frame (None: the start).
            duration: Seconds of video to read from ``start`` (None: to the end).
            max_frames: Stop after this many frames (None: no limit).
            fps: Frames per second, through ffmpeg's ``fps`` filter (None: every frame of the video).

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
        arguments += ["-an"]
        if fps is not None:
            arguments += ["-vf", f"fps={fps:g}"]
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
        self,
        source: Path,
        sample_rate: int,
        *,
        start: float | None = None,
        duration: float | None = None,
        mono: bool = True,
    ) -> np.ndarray:
        """Decodes the first audio stream of ``source`` to float32 samples at ``sample_rate``.

        ffmpeg writes a temporary 16-bit PCM wav at ``sample_rate`` (``-ar``: ffmpeg's own resampler,
        which is what the official ``ffmpeg -acodec pcm_s16le -ar 16000`` extraction uses), which
        soundfile reads.

        Args:
            source: A video or audio file.
            sample_rate: The rate to resample to, in Hz.
            start: Seconds to seek to first (None: the start).
            duration: Seconds to decode from ``start`` (None: to the end).
            mono: Mix the channels down in ffmpeg (``-ac 1``) and return ``[n]``; False keeps the stream's
                channels and returns ``[channels, n]``.

        Returns:
            The samples in [-1, 1], shape ``[n]`` (``mono``) or ``[channels, n]``.

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
            arguments += ["-map", "0:a:0", "-vn", *(["-ac", "1"] if mono else []), "-ar", str(sample_rate)]
            arguments += ["-c:a", "pcm_s16le", "-f", "wav", str(wav)]
            self.run(arguments)
            samples, _ = soundfile.read(str(wav), dtype="float32", always_2d=True)
        decoded = np.asarray(samples, dtype=np.float32)
        result = np.ascontiguousarray(decoded.mean(axis=1) if mono else decoded.T)
        if result.size == 0:
            raise ClipFailure("no audio samples", f"the audio of {source} is empty")
        return result

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
    """Resolves the ffmpeg binary with ``shutil.which``.

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
