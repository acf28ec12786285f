"""CREMA-D: 7,442 acted clips of 6 emotions, as OGM-GE's preprocessing leaves them on disk."""

from __future__ import annotations

from pathlib import Path, PurePath
from typing import Literal

from pdmp_lightning.data.audiovisual.base import AudioVisualDataModule
from pdmp_lightning.data.audiovisual.media import FrameSelection
from pdmp_lightning.data.audiovisual.splits import ClipEntry, read_rows, relative_path, unique_entries
from pdmp_lightning.errors import config_error
from pdmp_lightning.types import NonNegativeInt, OpenUnitInterval, PositiveInt

#: The emotions in OGM-GE's order: label ``i`` is ``CREMAD_EMOTIONS[i]``.
CREMAD_EMOTIONS = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")

CremaDAudio = Literal["wav", "npy", "pt"]
#: Default audio folder of each audio kind.
DEFAULT_AUDIO_DIRS: dict[str, str] = {"wav": "AudioWAV", "npy": "audio", "pt": "audio"}


class CREMADDataModule(AudioVisualDataModule):
    """CREMA-D (6 emotions, 7,442 clips) with the train/test lists of OGM-GE and a carved validation split.

    Expected below ``root`` (every path option is relative to it):

    - ``train.csv`` and ``test.csv``: rows ``clip_id,EMO`` without a header (e.g. ``1088_IOM_NEU_XX,NEU``);
    - ``Image-01-FPS/<clip_id>/*.jpg``: the frames (any file names: they are sorted naturally);
    - ``AudioWAV/<clip_id>.wav`` (or ``<audio_dir>/<clip_id>.npy`` / ``.pt`` with ``audio="npy"`` / ``"pt"``).

    Batches are ``{"audio": float32 [B, 1, 257, 188], "visual": float32 [B, 3, T, H, W], "label": int64 [B]}``.
    From wav, the audio is OGM-GE's recipe computed on the fly: the file read as ``librosa.load(sr=22050)``
    reads it (channels averaged; another rate resampled with soxr "HQ", librosa's own resampler, to
    librosa's length, see ``Resampler``), tiled to 3 s,
    clipped to [-1, 1], STFT with n_fft 512 and hop 353, ``log(|S| + 1e-7)``, plus a channel dimension
    (``log_spectrogram``). CREMA-D's wavs are 16 kHz: ``python -m
    pdmp_lightning.prepare cremad`` writes them at 22,050 Hz once, so that training does not resample.
    Precomputed ``.npy`` arrays (``allow_pickle=False``) and ``.pt`` tensors (``weights_only=True``) are
    returned as stored, with a channel dimension added to 2-D arrays (they must share one shape to be
    batched).

    Labels follow OGM-GE's fixed order NEU 0, HAP 1, SAD 2, FEA 3, DIS 4, ANG 5. CREMA-D has no validation
    list: ``val_fraction`` of the usable train clips is carved out, stratified by emotion, seeded by ``seed``.
    ``num_frames`` frames are taken per clip (1 by default, as in OGM-GE; 2 or 3 in other papers): by
    default the first ``num_frames`` in sorted order, as OGM-GE's loader does (it takes the first names
    ``os.listdir`` gives; its random choice is computed but not used), ``frame_selection="centres"`` for
    evenly spaced ones; a clip with fewer frames repeats its last one. Clips whose frames or audio are missing are
    skipped with a warning.

    Args:
        root: The CREMA-D folder.
        batch_size: Samples per batch.
        num_workers: DataLoader worker processes.
        num_frames: Frames per clip.
        image_size: Height and width of the frames (224 in the papers; smaller for CPU runs).
        val_fraction: Share of the usable train clips carved into the validation split.
        seed: Seed of the validation carve.
        frames_dir: Folder of the per-clip frame folders (``visual`` in other preprocessing scripts).
        audio: ``"wav"`` (spectrogram computed on the fly), ``"npy"`` or ``"pt"`` (precomputed features).
        audio_dir: Folder of the audio files (None: ``AudioWAV`` for wav, ``audio`` for npy / pt).
        train_split: The train list.
        test_split: The test list.
        frame_selection: Which frames of a clip: ``"first"`` (official), ``"segment_starts"`` or
            ``"centres"`` (see ``frame_indices``).

    Examples:
        >>> try:
        ...     CREMADDataModule("no/such/folder")
        ... except ValueError as error:  # the root is checked at once, naming it
        ...     print(str(error).split(";")[0])
        `root`: got 'no/such/folder'
    """

    def __init__(
        self,
        root: str,
        batch_size: PositiveInt = 64,
        num_workers: NonNegativeInt = 0,
        num_frames: PositiveInt = 1,
        image_size: PositiveInt = 224,
        val_fraction: OpenUnitInterval = 0.1,
        seed: int = 0,
        frames_dir: str = "Image-01-FPS",
        audio: CremaDAudio = "wav",
        audio_dir: str | None = None,
        train_split: str = "train.csv",
        test_split: str = "test.csv",
        frame_selection: FrameSelection = "first",
    ) -> None:
        super().__init__(root, batch_size, num_workers, num_frames, image_size, val_fraction, seed)
        self._set_frame_selection(frame_selection)
        if audio not in DEFAULT_AUDIO_DIRS:
            raise config_error("audio", audio, f"one of {list(DEFAULT_AUDIO_DIRS)}")
        self.audio = audio
        self.frames_dir = relative_path("frames_dir", frames_dir)
        self.audio_dir = relative_path("audio_dir", DEFAULT_AUDIO_DIRS[audio] if audio_dir is None else audio_dir)
        self.train_split = relative_path("train_split", train_split)
        self.test_split = relative_path("test_split", test_split)
        self._index()

    def _expected_layout(self) -> dict[str, str]:
        return {
            str(self.train_split): "train list, rows `clip_id,EMO`",
            str(self.test_split): "test list, rows `clip_id,EMO`",
            f"{self.frames_dir}/<clip_id>/": "*.jpg frames",
            f"{self.audio_dir}/<clip_id>.{self.audio}": "audio",
        }

    def _split_files(self) -> list[PurePath]:
        return [self.train_split, self.test_split]

    def _read_lists(self) -> tuple[dict[str, list[ClipEntry]], list[str]]:
        lists = {
            "train": self._read_csv("train_split", self.train_split),
            "test": self._read_csv("test_split", self.test_split),
        }
        return lists, list(CREMAD_EMOTIONS)

    def _read_csv(self, argument: str, relative: PurePath) -> list[ClipEntry]:
        path = self.root / relative
        entries = []
        for number, row in read_rows(path):
            fields = [field.strip() for field in row.split(",")]
            emotion = fields[1].upper() if len(fields) >= 2 else ""
            if not fields[0] or emotion not in CREMAD_EMOTIONS:
                raise config_error(
                    argument,
                    f"{path} line {number}: {row!r}",
                    f"rows `clip_id,EMO` with EMO one of {list(CREMAD_EMOTIONS)} (no header)",
                )
            entries.append(ClipEntry(fields[0], CREMAD_EMOTIONS.index(emotion)))
        return unique_entries(entries)

    def _frames_folder(self, clip_id: str) -> Path:
        return self.root / self.frames_dir / clip_id

    def _audio_candidates(self, clip_id: str) -> tuple[Path, ...]:
        return (self.root / self.audio_dir / f"{clip_id}.{self.audio}",)
