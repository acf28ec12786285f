"""AVE: frames at 1 fps and a log spectrogram inside each annotated event segment, split files copied."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pdmp_lightning.data.audiovisual.media import Resampler
from pdmp_lightning.errors import config_error
from pdmp_lightning.prepare.audio import AVE_AUDIO_RATE, AVE_SHAPE, AVE_WAV_RATE, ave_event_spectrogram
from pdmp_lightning.prepare.ffmpeg import ClipFailure, FFmpeg
from pdmp_lightning.prepare.files import _copy_if_changed, _save_npy
from pdmp_lightning.prepare.jobs import ClipJob, Output, _Plan
from pdmp_lightning.prepare.raw import VIDEO_EXTENSIONS, _index, _missing_rows_line, _read_lines, _unsafe_name

__all__ = ["AVE_SPLITS"]

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

    resampler = Resampler(AVE_AUDIO_RATE)

    def make_audio(video: Path, start: float, end: float) -> Callable[[Path], None]:
        def write(target: Path) -> None:
            # PMR's chain: the whole audio track as a 44.1 kHz 16-bit wav (moviepy), librosa.load(sr=16000),
            # then the event segment cut from the resampled samples.
            waveform = ffmpeg.extract_audio(video, AVE_WAV_RATE, mono=False)
            try:
                spectrogram = ave_event_spectrogram(waveform, AVE_WAV_RATE, start, end, resampler)
            except ValueError as err:
                raise ClipFailure("audio shorter than the event segment", f"{video}: {err}") from err
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
