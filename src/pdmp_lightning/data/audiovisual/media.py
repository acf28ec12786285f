"""Reading one clip's media: its frames (found, ordered, chosen, transformed) and its audio features.

Everything here is a module-level function or a picklable object, so datasets that use them work
with DataLoader worker processes. torchvision, soundfile and soxr are imported when first needed, so
importing the package does not require them.

Where the official pipelines differ from one another (which frames a clip contributes), the rule is
an argument; see ``docs/datasets.md`` for each dataset's official rule and the library's option.
"""

from __future__ import annotations

import math
import pickle
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from pdmp_lightning.errors import check_int, config_error

#: ImageNet statistics used to normalise frames (as in OGM-GE and the papers built on it).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: File suffixes taken as frames (compared case-insensitively).
FRAME_SUFFIXES = (".jpg", ".jpeg")

#: The CREMA-D waveform recipe of OGM-GE: 22,050 Hz, 3 s, STFT n_fft 512 hop 353, log(|S| + 1e-7).
CREMAD_SAMPLE_RATE = 22050
CREMAD_SECONDS = 3
CREMAD_N_FFT = 512
CREMAD_HOP_LENGTH = 353
LOG_EPSILON = 1e-7

#: Audio file suffixes ``load_audio`` reads.
AUDIO_SUFFIXES = (".wav", ".npy", ".pt", ".pkl")

#: The resampler of ``librosa.load`` (librosa >= 0.10): soxr at its "HQ" quality.
RESAMPLE_QUALITY = "soxr_hq"

FrameTransform = Callable[[Tensor], Tensor]

#: How a clip's ``T`` frames are chosen out of its ``N`` frames (in natural order), see ``frame_indices``:
#:
#: - ``"first"``: the first ``T`` (OGM-GE's CREMA-D loader and PMR's AVE loader, which take the first
#:   ``T`` names of ``os.listdir``; sorted here, so the choice does not depend on the file system);
#: - ``"segment_starts"``: ``floor(N / T) * i`` for ``i < T`` (OGM-GE's Kinetics-Sounds / AVE ``AVDataset``);
#: - ``"centres"``: the centre of each of ``T`` equal segments (the library's rule before 0.2: it covers the
#:   whole clip, see ``select_frame_indices``).
FrameSelection = Literal["first", "segment_starts", "centres"]
FRAME_SELECTIONS: tuple[str, ...] = ("first", "segment_starts", "centres")


# --- frames -------------------------------------------------------------------------------------


def natural_sort_key(name: str) -> tuple[tuple[str, int], ...]:
    """Sort key that orders digit runs by value, so ``frame_2.jpg`` comes before ``frame_10.jpg``.

    Examples:
        >>> sorted(["frame_10.jpg", "frame_2.jpg", "frame_1.jpg"], key=natural_sort_key)
        ['frame_1.jpg', 'frame_2.jpg', 'frame_10.jpg']
    """
    parts = re.split(r"(\d+)", name)
    # `parts` alternates text and digit runs, starting (and ending) with text: pair each text with its number.
    return tuple((parts[i], int(parts[i + 1]) if i + 1 < len(parts) else -1) for i in range(0, len(parts), 2))


def list_frames(folder: Path) -> list[Path]:
    """The ``*.jpg`` / ``*.jpeg`` files of a clip folder in natural order (empty if the folder is absent)."""
    if not folder.is_dir():
        return []
    frames = [path for path in folder.iterdir() if path.suffix.lower() in FRAME_SUFFIXES and path.is_file()]
    return sorted(frames, key=lambda path: natural_sort_key(path.name))


def select_frame_indices(available: int, num_frames: int) -> list[int]:
    """Indices of ``num_frames`` evenly spaced frames out of ``available``.

    With enough frames, frame ``i`` is the centre of the ``i``-th of ``num_frames`` equal segments,
    ``floor((i + 0.5) * available / num_frames)``: one frame is the middle one, as many as there are is
    all of them. With fewer frames than asked, every frame is used once and the last one is repeated.

    Examples:
        >>> select_frame_indices(9, 3), select_frame_indices(3, 1), select_frame_indices(2, 4)
        ([1, 4, 7], [1], [0, 1, 1, 1])
    """
    if available < 1 or num_frames < 1:
        raise ValueError(f"need at least one frame available and asked for; got {available} and {num_frames}")
    if available >= num_frames:
        return [((2 * i + 1) * available) // (2 * num_frames) for i in range(num_frames)]
    return list(range(available)) + [available - 1] * (num_frames - available)


def check_frame_selection(frame_selection: Any) -> FrameSelection:
    """``frame_selection`` if it names a rule of ``FRAME_SELECTIONS``; a configuration error naming it otherwise."""
    if frame_selection not in FRAME_SELECTIONS:
        raise config_error(
            "frame_selection",
            frame_selection,
            f"one of {list(FRAME_SELECTIONS)}",
            hint="'first' and 'segment_starts' are the official loaders' rules, 'centres' covers the whole "
            "clip (see docs/datasets.md)",
        )
    checked: FrameSelection = frame_selection
    return checked


def frame_indices(available: int, num_frames: int, selection: FrameSelection = "centres") -> list[int]:
    """Indices of the ``num_frames`` frames a clip of ``available`` frames contributes, by ``selection``.

    - ``"first"``: ``0, 1, ..., T - 1``, as the official CREMA-D (OGM-GE) and AVE (PMR) loaders, which
      take the first ``T`` entries of ``os.listdir`` (unsorted there; sorted here, which is the same
      wherever ``os.listdir`` happens to list the frames in order). With fewer frames than asked, every
      frame is used once and the last one repeated (the official loaders raise ``IndexError``).
    - ``"segment_starts"``: ``floor(N / T) * i``, the first frame of each of ``T`` segments of
      ``floor(N / T)`` frames, as OGM-GE's ``AVDataset`` (``frame_0000{seg * i + 1}.jpg``). With fewer
      frames than asked (``floor(N / T) = 0``) that is the first frame ``T`` times, as there.
    - ``"centres"``: ``select_frame_indices``, the centre of each of ``T`` equal segments.

    Examples:
        >>> [frame_indices(9, 3, rule) for rule in ("first", "segment_starts", "centres")]
        [[0, 1, 2], [0, 3, 6], [1, 4, 7]]
        >>> frame_indices(2, 3, "first"), frame_indices(2, 3, "segment_starts")
        ([0, 1, 1], [0, 0, 0])
    """
    if available < 1 or num_frames < 1:
        raise ValueError(f"need at least one frame available and asked for; got {available} and {num_frames}")
    if selection == "first":
        return [min(i, available - 1) for i in range(num_frames)]
    if selection == "segment_starts":
        return [(available // num_frames) * i for i in range(num_frames)]
    if selection == "centres":
        return select_frame_indices(available, num_frames)
    raise config_error("selection", selection, f"one of {list(FRAME_SELECTIONS)}")


def frame_transform(image_size: int, train: bool) -> FrameTransform:
    """The transform of a ``uint8 [T, 3, H, W]`` frame stack into ``float32 [T, 3, image_size, image_size]``.

    Train: RandomResizedCrop(image_size) and RandomHorizontalFlip; evaluation: Resize((image_size,
    image_size)). Both end with ImageNet normalisation. The random parameters are drawn once per clip,
    so all frames of a clip get the same crop and flip.
    """
    try:
        from torchvision.transforms import v2
    except ImportError as err:  # pragma: no cover - depends on the installation
        raise ImportError('audio-visual datamodules need torchvision: pip install "pdmp-lightning[vision]"') from err
    geometry: list[Any] = (
        [v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()]
        if train
        else [v2.Resize((image_size, image_size), antialias=True)]
    )
    transform: FrameTransform = v2.Compose(
        [*geometry, v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )
    return transform


def segment_indices(available: int, num_frames: int, train: bool) -> list[int]:
    """Indices of ``num_frames`` frames out of ``available``, one per equal segment (TSN-style sampling).

    Evaluation takes each segment's centre (``select_frame_indices``); training draws one frame
    uniformly inside each segment with the global torch generator (seeded by ``seed_everything``), as
    the two-stream recipes of BalanceBenchmark and TSN do. With fewer frames than asked, both use every
    frame once and repeat the last one.

    Examples:
        >>> segment_indices(9, 3, train=False)
        [1, 4, 7]
        >>> all(3 * i <= index < 3 * (i + 1) for i, index in enumerate(segment_indices(9, 3, train=True)))
        True
    """
    if not train or available <= num_frames:
        return select_frame_indices(available, num_frames)
    bounds = [i * available // num_frames for i in range(num_frames + 1)]
    return [int(torch.randint(bounds[i], bounds[i + 1], ()).item()) for i in range(num_frames)]


def decode_frames(paths: Sequence[Path], indices: Sequence[int], mode: Literal["RGB", "GRAY"] = "RGB") -> Tensor:
    """Decodes ``paths[i]`` for each ``i`` of ``indices`` into one ``uint8 [len(indices), C, H, W]`` stack.

    Each file is decoded once however often it is chosen; frames whose size differs from the first
    chosen frame's are resized to it. ``mode`` ``"RGB"`` gives ``C = 3``, ``"GRAY"`` gives ``C = 1``.
    """
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2 import functional as tvf

    decoded: dict[int, Tensor] = {}
    for index in dict.fromkeys(indices):
        try:
            decoded[index] = decode_image(str(paths[index]), mode=ImageReadMode[mode])
        except (RuntimeError, OSError) as err:
            raise RuntimeError(f"could not decode frame {paths[index]}: {err}") from err
    size = list(decoded[indices[0]].shape[-2:])
    return torch.stack(
        [
            decoded[i] if list(decoded[i].shape[-2:]) == size else tvf.resize(decoded[i], size, antialias=True)
            for i in indices
        ]
    )


def load_frames(
    paths: Sequence[Path], num_frames: int, transform: FrameTransform, selection: FrameSelection = "centres"
) -> Tensor:
    """Decodes the chosen frames of a clip and transforms them together into ``float32 [3, T, H, W]``.

    Args:
        paths: All frames of the clip, in order.
        num_frames: How many to return.
        transform: Applied to the ``uint8 [T, 3, H, W]`` stack.
        selection: Which frames (see ``frame_indices``).
    """
    stack: Tensor = transform(decode_frames(paths, frame_indices(len(paths), num_frames, selection)))
    return stack.permute(1, 0, 2, 3).contiguous()


# --- audio --------------------------------------------------------------------------------------


def log_spectrogram(
    waveform: Tensor,
    length: int = CREMAD_SAMPLE_RATE * CREMAD_SECONDS,
    n_fft: int = CREMAD_N_FFT,
    hop_length: int = CREMAD_HOP_LENGTH,
) -> Tensor:
    """OGM-GE's CREMA-D spectrogram of a mono waveform: ``float32 [1, n_fft // 2 + 1, 1 + length // hop]``.

    The official code (``dataset/CramedDataset.py`` lines 57-63 of GeWu-Lab/OGM-GE_CVPR2022@343dc1d):
    ``np.tile(samples, 3)[:66150]``, clipped to [-1, 1], ``librosa.stft(n_fft=512, hop_length=353)``,
    ``log(|S| + 1e-7)``. Here the waveform is repeated end to end and cut to ``length`` samples, which is
    the same whenever the clip lasts at least a third of ``length`` (every CREMA-D clip does); a shorter
    clip is repeated until it fills ``length``, where the official code would return fewer frames (a
    spectrogram its DataLoader cannot batch with the others). The STFT uses a periodic Hann window of
    ``n_fft`` samples and centred frames padded by reflection, as librosa < 0.10 did (the version OGM-GE
    used; librosa >= 0.10 pads with zeros, which changes only the first and last frame). The defaults
    give ``[1, 257, 188]``.

    Examples:
        >>> log_spectrogram(torch.zeros(22050)).shape
        torch.Size([1, 257, 188])
    """
    waveform = waveform.reshape(-1).float()
    if waveform.numel() == 0:
        raise ValueError("the waveform is empty")
    repeats = -(-length // waveform.numel())
    tiled = waveform.repeat(repeats)[:length].clamp(-1.0, 1.0)
    spectrum = torch.stft(
        tiled,
        n_fft=n_fft,
        hop_length=hop_length,
        win_length=n_fft,
        window=torch.hann_window(n_fft),
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )
    return torch.log(spectrum.abs() + LOG_EPSILON).unsqueeze(0)


def _soxr() -> Any:
    try:
        import soxr
    except ImportError as err:  # pragma: no cover - depends on the installation
        raise ImportError('resampling audio needs soxr: pip install "pdmp-lightning[audio]"') from err
    return soxr


@dataclass(frozen=True)
class Resampler:
    """``librosa.load``'s resampling to ``sample_rate``, without librosa: soxr "HQ", then librosa's length.

    ``librosa.load(path, sr=...)`` (librosa >= 0.10) resamples with ``soxr.resample(quality="soxr_hq")``
    and then pads with zeros (or cuts) to ``ceil(n * sample_rate / rate)`` samples; this does the same,
    so the official recipes that load with librosa are reproduced to float32 rounding. soxr designs its
    filter in C on each call, about 0.2 ms (``torchaudio.functional.resample`` rebuilt a sinc kernel on
    each call, 0.2 s, and leaves energy above the original Nyquist frequency that soxr removes); a
    ``soxr.ResampleStream`` kept per worker and cleared between clips gives the same samples but measured
    no faster, so nothing more is cached. The object only holds the target rate and quality, so it
    pickles into DataLoader workers; soxr is imported in the worker on first use.

    Args:
        sample_rate: The rate to resample to, in Hz.
        quality: soxr's quality (``"soxr_hq"``, librosa's default; ``"soxr_vhq"``, ``"soxr_mq"``, ...).

    Examples:
        >>> resampler = Resampler(22050)
        >>> # ceil(16001 * 22050 / 16000) samples, as librosa.load gives
        >>> resampler(np.zeros(16001, dtype=np.float32), 16000).shape
        (22052,)
    """

    sample_rate: int
    quality: str = RESAMPLE_QUALITY

    def __post_init__(self) -> None:
        check_int("sample_rate", self.sample_rate, 1)
        if not isinstance(self.quality, str) or not self.quality:
            raise config_error("quality", self.quality, "a soxr quality name", hint="librosa's default is 'soxr_hq'")

    def __call__(self, samples: np.ndarray, rate: int) -> np.ndarray:
        """``samples`` (``[n]``, at ``rate`` Hz) at ``sample_rate``, same dtype, ``ceil(n * sr / rate)`` long."""
        if rate == self.sample_rate:
            return samples
        check_int("rate", rate, 1)
        size = math.ceil(samples.shape[-1] * self.sample_rate / rate)
        resampled = np.asarray(
            _soxr().resample(samples, rate, self.sample_rate, quality=self.quality), dtype=samples.dtype
        )
        if resampled.shape[-1] < size:
            resampled = np.pad(resampled, (0, size - resampled.shape[-1]))
        return resampled[:size]


def read_samples(path: Path) -> tuple[np.ndarray, int]:
    """A sound file's samples as ``librosa.load`` reads them: ``float32 [n]`` (channels averaged), and its rate.

    Read with soundfile (no FFmpeg needed).
    """
    try:
        import soundfile
    except ImportError as err:  # pragma: no cover - depends on the installation
        raise ImportError('reading wav files needs soundfile: pip install "pdmp-lightning[audio]"') from err
    data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    # librosa.to_mono: the mean over the channels, in float32.
    samples = data[:, 0] if data.shape[1] == 1 else np.mean(data.T, axis=0)
    return np.ascontiguousarray(samples, dtype=np.float32), int(rate)


def read_wav(path: Path, sample_rate: int = CREMAD_SAMPLE_RATE, resampler: Resampler | None = None) -> Tensor:
    """A wav file as ``librosa.load(path, sr=sample_rate)`` returns it, as a ``float32`` tensor.

    Channels are averaged, and a file at another rate is resampled by ``resampler`` (a
    ``Resampler`` to ``sample_rate`` when None). A file already at ``sample_rate`` (as ``python -m
    pdmp_lightning.prepare cremad`` writes them) is not resampled at all.
    """
    resampler = resampler if resampler is not None else Resampler(sample_rate)
    if resampler.sample_rate != sample_rate:
        raise config_error("resampler", resampler, f"a Resampler to sample_rate ({sample_rate} Hz)")
    samples, rate = read_samples(path)
    return torch.from_numpy(resampler(samples, rate))


def load_audio(path: Path, resampler: Resampler | None = None) -> Tensor:
    """One clip's audio features as ``float32``, with a channel dimension added to 2-D arrays.

    - ``.wav``: the CREMA-D recipe, ``read_wav`` (at 22,050 Hz, with ``resampler`` if given) then
      ``log_spectrogram`` -> ``[1, 257, 188]``;
    - ``.npy``: ``numpy.load(allow_pickle=False)``;
    - ``.pt``: ``torch.load(weights_only=True)`` (a tensor or an array);
    - ``.pkl``: ``pickle.load``. Unpickling runs code from the file: the datamodules only read pickles from
      below the ``root`` the user gave.
    """
    suffix = path.suffix.lower()
    try:
        if suffix == ".wav":
            return log_spectrogram(read_wav(path, CREMAD_SAMPLE_RATE, resampler))
        if suffix == ".npy":
            content: Any = np.load(path, allow_pickle=False)
        elif suffix == ".pt":
            content = torch.load(path, map_location="cpu", weights_only=True)
        elif suffix == ".pkl":
            with path.open("rb") as handle:
                content = pickle.load(handle)
        else:
            raise ValueError(f"unsupported audio file type {suffix!r} (expected one of {AUDIO_SUFFIXES})")
        features = torch.as_tensor(np.asarray(content, dtype=np.float32))
    except ImportError:
        raise
    except Exception as err:
        raise RuntimeError(f"could not read audio features from {path}: {err}") from err
    return features.unsqueeze(0) if features.ndim == 2 else features
