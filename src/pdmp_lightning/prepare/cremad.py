"""CREMA-D: frames at 1 fps, the wav at 22,050 Hz, ``train.csv``/``test.csv`` copied or drawn by emotion."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from pathlib import Path

from pdmp_lightning.data.audiovisual.media import Resampler, read_samples
from pdmp_lightning.errors import config_error
from pdmp_lightning.prepare.audio import _soundfile
from pdmp_lightning.prepare.ffmpeg import ClipFailure, FFmpeg
from pdmp_lightning.prepare.files import _copy_if_changed, _write_text_if_changed
from pdmp_lightning.prepare.jobs import ClipJob, Output, _Plan
from pdmp_lightning.prepare.raw import AUDIO_EXTENSIONS, VIDEO_EXTENSIONS, _index, _missing_rows_line, _read_lines

__all__ = ["CREMAD_AUDIO_RATE", "CREMAD_EMOTIONS", "cremad_emotion", "stratified_split"]

CREMAD_EMOTIONS = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")
CREMAD_AUDIO_RATE = 22_050


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

    resampler = Resampler(CREMAD_AUDIO_RATE)

    def make_audio(audio_path: Path) -> Callable[[Path], None]:
        def write(target: Path) -> None:
            if audio_path.suffix.lower() != ".wav":
                ffmpeg.encode_wav(audio_path, target, CREMAD_AUDIO_RATE)
                return
            try:
                samples, rate = read_samples(audio_path)
            except RuntimeError as err:
                raise ClipFailure("unreadable wav", f"{audio_path}: {err}") from err
            if samples.size == 0:
                raise ClipFailure("empty wav", str(audio_path))
            # What librosa.load(sr=22050) gives, stored as float32 so that reading it back gives it exactly.
            resampled = resampler(samples, rate)
            _soundfile().write(str(target), resampled, CREMAD_AUDIO_RATE, subtype="FLOAT", format="WAV")

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
