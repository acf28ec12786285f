"""UCF-101: every frame of each listed video, optical flow between consecutive frames, the split lists copied."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path, PurePath
from typing import Any, Literal

import numpy as np

from pdmp_lightning.data.audiovisual.media import list_frames
from pdmp_lightning.errors import config_error
from pdmp_lightning.prepare.ffmpeg import ClipFailure, FFmpeg
from pdmp_lightning.prepare.files import _copy_if_changed, _write_text_if_changed
from pdmp_lightning.prepare.jobs import ClipJob, Output, _Plan
from pdmp_lightning.prepare.raw import VIDEO_EXTENSIONS, _index, _missing_rows_line, _read_lines, _unsafe_name

__all__ = [
    "FLOW_BOUND",
    "FLOW_METHODS",
    "UCF101_LISTS",
    "compute_flow",
    "default_flow_method",
    "flow_to_uint8",
    "ucf101_list_clip",
]

FlowMethod = Literal["tvl1", "farneback"]
FLOW_METHODS: tuple[FlowMethod, ...] = ("tvl1", "farneback")
#: Flow is clipped to [-FLOW_BOUND, FLOW_BOUND] pixels and mapped linearly onto 0..255 (the two-stream convention).
FLOW_BOUND = 20.0
#: The official split files, in ``ucfTrainTestlist/``; the first three are required.
UCF101_LISTS = (
    "classInd.txt",
    "trainlist01.txt",
    "testlist01.txt",
    "trainlist02.txt",
    "testlist02.txt",
    "trainlist03.txt",
    "testlist03.txt",
)
#: The file under ``--out`` that records how the flow was computed.
METHOD_FILE = "flow_method.txt"
LISTS_FOLDER = "ucfTrainTestlist"
#: Farneback's parameters (OpenCV's sample values, as in the two-stream re-implementations that use it).
FARNEBACK = {"pyr_scale": 0.5, "levels": 3, "winsize": 15, "iterations": 3, "poly_n": 5, "poly_sigma": 1.2}
FLOW_JPEG_QUALITY = 95


def _opencv() -> Any:
    try:
        import cv2
    except ImportError as err:  # pragma: no cover - OpenCV ships with the [av] extra
        raise ImportError(
            'prepare computes optical flow with OpenCV: pip install "pdmp-lightning[av]" '
            "(opencv-contrib-python-headless, which has TV-L1)"
        ) from err
    return cv2


def default_flow_method() -> FlowMethod:
    """``"tvl1"`` when OpenCV's contrib modules provide Dual TV-L1 (opencv-contrib), else ``"farneback"``."""
    cv2 = _opencv()
    return "tvl1" if hasattr(getattr(cv2, "optflow", None), "DualTVL1OpticalFlow_create") else "farneback"


def method_record(method: FlowMethod) -> str:
    """The line written to ``flow_method.txt``: the method, OpenCV's version and the stored range."""
    name = "cv2.optflow.DualTVL1OpticalFlow (defaults)" if method == "tvl1" else "cv2.calcOpticalFlowFarneback"
    return f"{method}: {name}, OpenCV {_opencv().__version__}; clipped to +-{FLOW_BOUND:g} px, mapped onto 0..255\n"


def compute_flow(previous: np.ndarray, current: np.ndarray, method: FlowMethod) -> np.ndarray:
    """Dense optical flow from one grayscale ``uint8 [H, W]`` frame to the next: ``float32 [H, W, 2]`` (x, y) pixels.

    Examples:
        >>> frame = np.zeros((16, 16), dtype=np.uint8)
        >>> compute_flow(frame, frame, "farneback").shape
        (16, 16, 2)
    """
    cv2 = _opencv()
    if method == "tvl1":
        flow = cv2.optflow.DualTVL1OpticalFlow_create().calc(previous, current, None)
    else:
        flow = cv2.calcOpticalFlowFarneback(previous, current, None, flags=0, **FARNEBACK)
    return np.asarray(flow, dtype=np.float32)


def flow_to_uint8(flow: np.ndarray) -> np.ndarray:
    """Flow in pixels clipped to [-20, 20] and mapped linearly onto 0..255 (rounded): 0 px is 128.

    Examples:
        >>> flow_to_uint8(np.array([-30.0, -20.0, 0.0, 20.0])).tolist()
        [0, 0, 128, 255]
    """
    scaled = (np.clip(flow, -FLOW_BOUND, FLOW_BOUND) + FLOW_BOUND) * (255.0 / (2 * FLOW_BOUND))
    stored: np.ndarray = np.rint(scaled).astype(np.uint8)
    return stored


def write_flow(frames: list[Path], folder: Path, method: FlowMethod) -> int:
    """Writes ``flow_x_NNNNN.jpg`` and ``flow_y_NNNNN.jpg`` for each pair of consecutive ``frames`` into ``folder``.

    Returns:
        How many flow frames (pairs) were written: one fewer than the frames.

    Raises:
        ClipFailure: Fewer than two frames, or a frame OpenCV cannot read or a flow frame it cannot write.
    """
    cv2 = _opencv()
    if len(frames) < 2:
        raise ClipFailure("too few frames for optical flow", f"{len(frames)} frame(s) in {frames[0].parent}")
    previous = None
    for index, path in enumerate(frames):
        current = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if current is None:
            raise ClipFailure("unreadable frame", str(path))
        if previous is not None:
            if previous.shape != current.shape:
                current = cv2.resize(current, (previous.shape[1], previous.shape[0]), interpolation=cv2.INTER_AREA)
            stored = flow_to_uint8(compute_flow(previous, current, method))
            for axis, plane in (("x", stored[..., 0]), ("y", stored[..., 1])):
                target = folder / f"flow_{axis}_{index:05d}.jpg"
                if not cv2.imwrite(str(target), plane, [cv2.IMWRITE_JPEG_QUALITY, FLOW_JPEG_QUALITY]):
                    raise ClipFailure("could not write flow", str(target))
        previous = current
    return len(frames) - 1


def ucf101_list_clip(line: str) -> str:
    """The clip name a split-list line names (``Class/v_Class_gXX_cYY.avi [label]``; a trailing slash is fine).

    Examples:
        >>> ucf101_list_clip("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1")
        'v_ApplyEyeMakeup_g08_c01'
        >>> ucf101_list_clip("Archery\\\\v_Archery_g01_c01/")
        'v_Archery_g01_c01'
    """
    fields = line.split()
    parts = [part for part in (fields[0] if fields else "").replace("\\", "/").split("/") if part]
    name = parts[-1] if parts else ""
    return PurePath(name).stem if name.lower().endswith(".avi") else name


def _split_folder(raw: Path, splits: Path | None) -> Path:
    folder = splits if splits is not None else (raw / LISTS_FOLDER if (raw / LISTS_FOLDER).is_dir() else raw)
    missing = [name for name in UCF101_LISTS[:3] if not (folder / name).is_file()]
    if missing:
        raise config_error(
            "--splits" if splits is not None else "--raw",
            str(splits if splits is not None else raw),
            f"a folder holding the official lists ({', '.join(UCF101_LISTS[:3])}, and trainlist02 ... testlist03 "
            f"when present){'' if splits is not None else f', directly or in {LISTS_FOLDER}/'}",
            f"{folder} lacks {', '.join(missing)}",
        )
    return folder


def _plan_ucf101(
    raw: Path, out: Path, ffmpeg: FFmpeg, splits: Path | None, fps: float | None, method: FlowMethod, overwrite: bool
) -> _Plan:
    lists_folder = _split_folder(raw, splits)
    recorded = (out / METHOD_FILE).read_text(encoding="utf-8").split(":")[0] if (out / METHOD_FILE).is_file() else None
    if recorded is not None and recorded != method and not overwrite:
        raise config_error(
            "--flow",
            method,
            f"the method of the flow already under {out} ({recorded}, see {METHOD_FILE})",
            f"pass `--flow {recorded}` to resume, or --overwrite to recompute every clip with {method}",
        )
    present = [name for name in UCF101_LISTS if (lists_folder / name).is_file()]
    listed = {name: [ucf101_list_clip(line) for line in _read_lines(lists_folder / name)] for name in present[1:]}
    clips = sorted({clip for names in listed.values() for clip in names})
    videos, duplicates = _index(raw, VIDEO_EXTENSIONS, recursive=True)
    notes = [f"{duplicates} videos share a name with another one; the first by extension and path is used"] * bool(
        duplicates
    )
    unlisted = len(set(videos) - set(clips))
    if unlisted:
        notes.append(f"{unlisted} videos under {raw} are in no split list and were not prepared")
    frames_root, flow_root = out / "frames", out / "flow"

    def make_frames(video: Path) -> Callable[[Path], None]:
        def write(folder: Path) -> None:
            ffmpeg.extract_frames(video, folder, fps=fps)

        return write

    record = method_record(method)

    def make_flow(clip: str) -> Callable[[Path], None]:
        def write(folder: Path) -> None:
            _write_text_if_changed(out / METHOD_FILE, record)  # before any flow of this method lands
            write_flow(list_frames(frames_root / clip), folder, method)

        return write

    jobs: list[ClipJob] = []
    for clip in clips:
        if _unsafe_name(clip):
            jobs.append(ClipJob(clip, (), "unsafe clip name", repr(clip)))
        elif clip not in videos:
            jobs.append(ClipJob(clip, (), "video not found", f"{clip}.avi under {raw}"))
        else:
            outputs = (
                Output(frames_root / clip, "frames", make_frames(videos[clip])),
                Output(flow_root / clip, "frames", make_flow(clip)),
            )
            jobs.append(ClipJob(clip, outputs))

    def finish(ready: set[str]) -> list[str]:
        lines = []
        for name in present:
            wrote = _copy_if_changed(lists_folder / name, out / LISTS_FOLDER / name)
            state = f"[{'copied' if wrote else 'unchanged'} from {lists_folder}]"
            if name == "classInd.txt":
                lines.append(f"{name}: {len(_read_lines(lists_folder / name))} classes {state}")
            else:
                lines.append(f"{_missing_rows_line(name, listed[name], ready)} {state}")
        _write_text_if_changed(out / METHOD_FILE, record)
        rate = "every frame" if fps is None else f"{fps:g} fps"
        lines.append(f"frames: {rate}; optical flow: {record.strip()} [{METHOD_FILE}]")
        return lines

    return _Plan(jobs, finish, notes, [out, frames_root, flow_root, out / LISTS_FOLDER])
