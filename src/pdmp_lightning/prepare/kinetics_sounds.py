"""Kinetics-Sounds: at most 10 frames at 1 fps and a kaldi fbank of the whole clip, split files copied."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pdmp_lightning.errors import config_error
from pdmp_lightning.prepare.audio import KS_AUDIO_RATE, kinetics_fbank
from pdmp_lightning.prepare.ffmpeg import ClipFailure, FFmpeg
from pdmp_lightning.prepare.files import _copy_if_changed, _save_npy
from pdmp_lightning.prepare.jobs import ClipJob, Output, _Plan
from pdmp_lightning.prepare.raw import VIDEO_EXTENSIONS, _index, _missing_rows_line, _read_lines, _unsafe_name

__all__ = ["KS_MAX_FRAMES", "KS_SPLITS"]

KS_MAX_FRAMES = 10
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
            # The official wavs: `ffmpeg -acodec pcm_s16le -ar 16000` (channels kept; the fbank takes the first).
            waveform = ffmpeg.extract_audio(video, KS_AUDIO_RATE, mono=False)
            if waveform.shape[-1] < KS_AUDIO_RATE // 40:
                raise ClipFailure("audio too short", f"{waveform.shape[-1]} samples, less than one 25 ms window")
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
