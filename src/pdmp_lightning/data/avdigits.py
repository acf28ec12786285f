"""Audio-visual digits: scikit-learn's handwritten digit images paired with spoken digits from espeak-ng.

A small but real audio-visual task that trains on a laptop CPU in minutes. Every sample is one of the
1,797 8x8 handwritten digit images bundled with scikit-learn (``sklearn.datasets.load_digits``, no
download), paired with one utterance of the same digit's English word ("zero" .. "nine") synthesised by
`espeak-ng <https://github.com/espeak-ng/espeak-ng>`_ under a seeded draw of accent, voice variant, speed
and pitch, placed at a random offset in a one-second clip and buried in white noise at a seeded
signal-to-noise ratio. The audio reaches a lower accuracy than the images at the default noise level
(lower ``noise_snr_db`` for a weaker audio modality, raise it for a stronger one).

Generation runs espeak-ng once per utterance (a few hundred short calls, seconds on two cores) and caches
the finished tensors in ``cache_dir``, keyed by a hash of every generation argument and the seed; later
runs, and machines without espeak-ng that share the cache, only read the cache file. espeak-ng writes
byte-identical files for identical arguments, so a seed gives the same tensors on a given espeak-ng
version and platform (the version used is recorded in the cache as ``espeak_version``).

Needs ``scikit-learn``, ``soundfile`` and ``torchaudio`` (``pip install "pdmp-lightning[audio]" scikit-learn``)
and the ``espeak-ng`` program (Debian/Ubuntu: ``apt-get install espeak-ng``) unless the cache exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pdmp_lightning.data.base import InMemoryMultimodalDataModule
from pdmp_lightning.errors import check_int, config_error, is_number

#: The spoken words, index = digit class.
WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
#: espeak-ng English accents drawn from (all ship with the ``espeak-ng-data`` package, no MBROLA needed).
VOICES: tuple[str, ...] = (
    "en",
    "en-us",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-029",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-us-nyc",
)
#: espeak-ng voice variants drawn from ("" is the accent's own voice).
VARIANTS: tuple[str, ...] = ("", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
#: Speaking rates (words per minute, ``-s``) and pitches (0-99, ``-p``) are drawn uniformly from these ranges.
SPEED_RANGE: tuple[int, int] = (110, 230)
PITCH_RANGE: tuple[int, int] = (20, 80)

NUM_CLASSES = 10
NUM_IMAGES = 1797
SAMPLE_RATE = 16_000
CLIP_SAMPLES = SAMPLE_RATE  # one second
N_FFT = 400  # 25 ms windows
HOP_LENGTH = 160  # 10 ms hops
NUM_FRAMES = CLIP_SAMPLES // HOP_LENGTH + 1
TOP_DB = 80.0
#: Bumped whenever the generation changes, so older caches are not read as current ones.
FORMAT_VERSION = 1
DEFAULT_CACHE_DIR = Path("~/.cache/pdmp_lightning/avdigits")

_ESPEAK = "espeak-ng"
_ESPEAK_HINT = "install it (Debian/Ubuntu: `apt-get install espeak-ng`, macOS: `brew install espeak-ng`)"


@dataclass(frozen=True)
class Utterance:
    """One espeak-ng utterance of a digit word.

    Attributes:
        word: Digit class, the index in ``WORDS``.
        voice: espeak-ng voice, an accent from ``VOICES`` with an optional ``+variant``.
        speed: Speaking rate in words per minute (``-s``).
        pitch: Pitch adjustment, 0-99 (``-p``).
    """

    word: int
    voice: str
    speed: int
    pitch: int

    def command(self, wav_path: Path, executable: str = _ESPEAK) -> list[str]:
        """The espeak-ng argument list that writes this utterance to ``wav_path``."""
        return [
            executable,
            "-v",
            self.voice,
            "-s",
            str(self.speed),
            "-p",
            str(self.pitch),
            "-w",
            str(wav_path),
            WORDS[self.word],
        ]


class AVDigitsDataModule(InMemoryMultimodalDataModule):
    """Handwritten digit images (scikit-learn) paired with noisy spoken digits (espeak-ng); 10 classes.

    Batches are ``{"audio": float32 [B, 1, n_mels, 101], "visual": float32 [B, 1, image_size, image_size],
    "label": int64 [B]}``:

    - ``audio``: log-mel spectrogram (torchaudio ``MelSpectrogram`` with 25 ms windows and 10 ms hops on
      16 kHz audio, then ``AmplitudeToDB`` with ``top_db=80``) of a one-second clip holding one utterance
      of the label's word at a random offset plus white noise, standardized per clip (zero mean, unit
      variance), so no statistic is shared across samples or splits.
    - ``visual``: the 8x8 digit image scaled to [0, 1], bilinearly upsampled to ``image_size`` and, if
      ``visual_noise > 0``, with Gaussian noise of that standard deviation added.

    There is one sample per image (1,797); image ``i`` is paired with an utterance drawn (with the seed)
    among the ``utterances_per_class`` utterances of its class, each utterance with its own accent, voice
    variant, speed and pitch. An utterance is shared by several samples, but each sample gets its own
    offset, noise and signal-to-noise ratio; the splits cut samples, not utterances, so a test clip's
    underlying utterance usually also occurs (differently noised) in train. After ``setup``,
    ``pairing`` tells which image and utterance every sample holds, and ``utterances`` describes
    the utterances.

    Everything is cached in ``cache_dir`` on first use (see ``cache_path``); the same arguments and
    seed always give the same tensors.

    Args:
        cache_dir: Directory of the cached tensors (default ``~/.cache/pdmp_lightning/avdigits``).
        utterances_per_class: Distinct espeak-ng utterances synthesised per digit word.
        image_size: Side of the upsampled square images.
        n_mels: Number of mel bands of the spectrogram.
        noise_snr_db: Mean signal-to-noise ratio of the audio, in dB, the speech power measured over the
            utterance itself (lower: harder audio).
        snr_spread_db: Each clip's SNR is drawn uniformly from ``noise_snr_db +/- snr_spread_db``.
        visual_noise: Standard deviation of the Gaussian noise added to the [0, 1]-scaled images.
        batch_size: Samples per batch.
        num_workers: DataLoader worker processes.
        val_fraction: Share of the samples in the validation split.
        test_fraction: Share of the samples in the test split.
        seed: Seed of the utterance draws, the pairing, the noise and the splits.

    Examples:
        >>> datamodule = AVDigitsDataModule(n_mels=40, image_size=32)
        >>> datamodule.modalities, datamodule.num_classes
        (['audio', 'visual'], 10)
        >>> datamodule.feature_shapes
        {'audio': (1, 40, 101), 'visual': (1, 32, 32)}
    """

    def __init__(
        self,
        cache_dir: str | None = None,
        utterances_per_class: int = 30,
        image_size: int = 32,
        n_mels: int = 40,
        noise_snr_db: float = -8.0,
        snr_spread_db: float = 6.0,
        visual_noise: float = 0.0,
        batch_size: int = 64,
        num_workers: int = 0,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 0,
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            num_workers=num_workers,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            seed=seed,
        )
        if cache_dir is not None and not isinstance(cache_dir, str | os.PathLike):
            raise config_error("cache_dir", cache_dir, "a directory path or None (~/.cache/pdmp_lightning/avdigits)")
        for name, value, low in (
            ("utterances_per_class", utterances_per_class, 1),
            ("image_size", image_size, 8),
            ("n_mels", n_mels, 8),
        ):
            check_int(name, value, low)
        if n_mels > N_FFT // 2 + 1:
            raise config_error("n_mels", n_mels, f"at most {N_FFT // 2 + 1} (the STFT's frequency bins)")
        for name, number, allowed in (
            ("noise_snr_db", noise_snr_db, "a finite number of dB"),
            ("snr_spread_db", snr_spread_db, "a finite number of dB >= 0"),
            ("visual_noise", visual_noise, "a finite standard deviation >= 0"),
        ):
            if not is_number(number, at_least=None if name == "noise_snr_db" else 0):
                raise config_error(name, number, allowed)
        check_int("seed", seed)
        self.cache_dir = Path(cache_dir if cache_dir is not None else DEFAULT_CACHE_DIR).expanduser()
        self.utterances_per_class = utterances_per_class
        self.image_size = image_size
        self.n_mels = n_mels
        self.noise_snr_db = float(noise_snr_db)
        self.snr_spread_db = float(snr_spread_db)
        self.visual_noise = float(visual_noise)
        #: The utterances (``utterances_per_class`` per word, word by word; filled by ``load``).
        self.utterances: list[Utterance] = []
        #: Per sample: ``image_index`` (row of ``load_digits``), ``utterance_index`` (into ``utterances``)
        #: and ``utterance_word`` (the spoken digit), int64 [num_samples] each (filled by ``load``).
        self.pairing: dict[str, Tensor] = {}
        self._loaded: dict[str, Any] | None = None

    # --- what the base class needs -----------------------------------------------------------------

    @property
    def modalities(self) -> list[str]:
        """``["audio", "visual"]``."""
        return ["audio", "visual"]

    @property
    def num_classes(self) -> int:
        """Ten digit classes."""
        return NUM_CLASSES

    @property
    def feature_shapes(self) -> dict[str, tuple[int, int, int]]:
        """Modality -> shape of one sample (known before ``setup``)."""
        return {"audio": (1, self.n_mels, NUM_FRAMES), "visual": (1, self.image_size, self.image_size)}

    @property
    def generation_parameters(self) -> dict[str, Any]:
        """Everything the cached tensors depend on (the cache key is a hash of it)."""
        return {
            "format_version": FORMAT_VERSION,
            "seed": self.seed,
            "utterances_per_class": self.utterances_per_class,
            "image_size": self.image_size,
            "n_mels": self.n_mels,
            "noise_snr_db": self.noise_snr_db,
            "snr_spread_db": self.snr_spread_db,
            "visual_noise": self.visual_noise,
            "voices": list(VOICES),
            "variants": list(VARIANTS),
            "speed_range": list(SPEED_RANGE),
            "pitch_range": list(PITCH_RANGE),
            "sample_rate": SAMPLE_RATE,
            "clip_samples": CLIP_SAMPLES,
            "n_fft": N_FFT,
            "hop_length": HOP_LENGTH,
            "top_db": TOP_DB,
        }

    @property
    def cache_path(self) -> Path:
        """The cache file of these arguments and seed."""
        text = json.dumps(self.generation_parameters, sort_keys=True)
        return self.cache_dir / f"avdigits-{hashlib.sha256(text.encode()).hexdigest()[:16]}.pt"

    def prepare_data(self) -> None:
        """Generates and caches the data if the cache does not hold it yet (once per node in DDP)."""
        self._load_or_generate()

    def load(self) -> tuple[dict[str, Tensor], Tensor]:
        """Reads the cache (generating it first if needed): ``{"audio", "visual"}`` tensors and the labels."""
        data = self._load_or_generate()
        self.utterances = [
            Utterance(word=int(word), voice=str(voice), speed=int(speed), pitch=int(pitch))
            for word, voice, speed, pitch in zip(
                data["utterance_word"].tolist(),
                data["utterance_voice"],
                data["utterance_speed"].tolist(),
                data["utterance_pitch"].tolist(),
                strict=True,
            )
        ]
        self.pairing = {
            "image_index": data["image_index"],
            "utterance_index": data["utterance_index"],
            "utterance_word": data["utterance_word"][data["utterance_index"]],
        }
        return {"audio": data["audio"], "visual": data["visual"]}, data["label"]

    # --- cache --------------------------------------------------------------------------------------

    def _load_or_generate(self) -> dict[str, Any]:
        if self._loaded is not None:
            return self._loaded
        path = self.cache_path
        data = self._read_cache(path) if path.is_file() else None
        if data is None:
            data = self._generate()
            _save_atomically(data, path)
        self._loaded = data
        return data

    def _read_cache(self, path: Path) -> dict[str, Any] | None:
        """The cached tensors, or None if the file is unreadable or was written for other arguments."""
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a truncated or foreign file: regenerate it
            return None
        if not isinstance(data, dict) or data.get("parameters") != self.generation_parameters:
            return None
        count = NUM_IMAGES
        expected = {
            "audio": (count, *self.feature_shapes["audio"]),
            "visual": (count, *self.feature_shapes["visual"]),
            "label": (count,),
            "image_index": (count,),
            "utterance_index": (count,),
            "utterance_word": (NUM_CLASSES * self.utterances_per_class,),
        }
        for key, shape in expected.items():
            value = data.get(key)
            if not isinstance(value, Tensor) or tuple(value.shape) != shape:
                return None
        return data

    # --- generation ---------------------------------------------------------------------------------

    def _generate(self) -> dict[str, Any]:
        images, targets = _digits()
        executable = shutil.which(_ESPEAK)
        if executable is None:
            raise RuntimeError(
                f"AVDigitsDataModule needs the `{_ESPEAK}` program to synthesise its spoken digits, and no cache "
                f"exists at {self.cache_path}: {_ESPEAK_HINT}, or point `cache_dir` at a directory holding the "
                "cache written by a machine that has it."
            )
        generator = torch.Generator().manual_seed(self.seed)
        utterances = _draw_utterances(self.utterances_per_class, generator)
        waveforms = _synthesise(utterances, executable)

        labels = torch.from_numpy(targets.astype(np.int64))
        count = len(labels)
        # Pair each image with an utterance of its class, then draw its offset and SNR.
        choice = torch.randint(0, self.utterances_per_class, (count,), generator=generator)
        utterance_index = labels * self.utterances_per_class + choice
        offsets = torch.rand(count, generator=generator)
        snr_db = self.noise_snr_db + self.snr_spread_db * (2 * torch.rand(count, generator=generator) - 1)
        clips = torch.zeros(count, CLIP_SAMPLES)
        for row, (index, offset) in enumerate(zip(utterance_index.tolist(), offsets.tolist(), strict=True)):
            speech = waveforms[index]
            start = int(offset * (CLIP_SAMPLES - len(speech)))
            clips[row, start : start + len(speech)] = speech
        # The speech has unit power over the utterance, so the noise's standard deviation is 10^(-SNR/20).
        noise_std = torch.pow(10.0, -snr_db / 20).unsqueeze(1)
        clips += noise_std * torch.randn(count, CLIP_SAMPLES, generator=generator)
        audio = _log_mel(clips, self.n_mels)

        visual = torch.from_numpy((images / 16.0).astype(np.float32)).unsqueeze(1)
        visual = F.interpolate(visual, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        if self.visual_noise > 0:
            visual = visual + self.visual_noise * torch.randn(visual.shape, generator=generator)

        return {
            "parameters": self.generation_parameters,
            "espeak_version": _espeak_version(executable),
            "audio": audio.contiguous(),
            "visual": visual.contiguous(),
            "label": labels,
            "image_index": torch.arange(count),
            "utterance_index": utterance_index,
            "utterance_word": torch.tensor([u.word for u in utterances]),
            "utterance_voice": [u.voice for u in utterances],
            "utterance_speed": torch.tensor([u.speed for u in utterances]),
            "utterance_pitch": torch.tensor([u.pitch for u in utterances]),
            "snr_db": snr_db,
        }


def _digits() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """scikit-learn's 1,797 8x8 digit images (values 0..16) and their labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError(
            "AVDigitsDataModule needs scikit-learn for its digit images: pip install scikit-learn"
        ) from err
    digits = load_digits()
    return np.asarray(digits.images, dtype=np.float64), np.asarray(digits.target)


def _draw_utterances(per_class: int, generator: torch.Generator) -> list[Utterance]:
    """``per_class`` utterances of every word, word by word, with seeded accent, variant, speed and pitch."""
    utterances = []
    for word in range(NUM_CLASSES):
        for _ in range(per_class):
            accent, variant, speed, pitch = (
                int(torch.randint(0, high, (1,), generator=generator))
                for high in (
                    len(VOICES),
                    len(VARIANTS),
                    SPEED_RANGE[1] - SPEED_RANGE[0] + 1,
                    PITCH_RANGE[1] - PITCH_RANGE[0] + 1,
                )
            )
            voice = VOICES[accent] + (f"+{VARIANTS[variant]}" if VARIANTS[variant] else "")
            utterances.append(Utterance(word, voice, SPEED_RANGE[0] + speed, PITCH_RANGE[0] + pitch))
    return utterances


def _synthesise(utterances: list[Utterance], executable: str) -> list[Tensor]:
    """Each utterance as 16 kHz mono speech with the silence trimmed, at unit power, at most one clip long."""
    try:
        import soundfile
        import torchaudio.functional as audio_functional
    except ImportError as err:
        raise ImportError(
            'AVDigitsDataModule needs soundfile and torchaudio: pip install "pdmp-lightning[audio]"'
        ) from err

    with tempfile.TemporaryDirectory(prefix="avdigits-") as directory:

        def run(index: int) -> Path:
            path = Path(directory) / f"{index:05d}.wav"
            command = utterances[index].command(path, executable)
            result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
            if result.returncode != 0 or not path.is_file():
                raise RuntimeError(
                    f"espeak-ng failed (exit status {result.returncode}) on {command[1:]}: {result.stderr.strip()}"
                )
            return path

        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            paths = list(pool.map(run, range(len(utterances))))
        waveforms = []
        for path, utterance in zip(paths, utterances, strict=True):
            samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
            wave = torch.from_numpy(samples.mean(axis=1))
            if rate != SAMPLE_RATE:
                wave = audio_functional.resample(wave, int(rate), SAMPLE_RATE)
            waveforms.append(_trimmed(wave, utterance))
    return waveforms


def _trimmed(wave: Tensor, utterance: Utterance) -> Tensor:
    """The speech between the first and last samples above 2% of the peak, scaled to unit power."""
    loud = (wave.abs() > 0.02 * wave.abs().max()).nonzero().flatten()
    if len(loud) == 0:
        raise RuntimeError(f"espeak-ng wrote silence for {utterance}")
    speech = wave[int(loud[0]) : int(loud[-1]) + 1]
    if len(speech) > CLIP_SAMPLES:  # not reached with SPEED_RANGE, kept as a guard
        start = (len(speech) - CLIP_SAMPLES) // 2
        speech = speech[start : start + CLIP_SAMPLES]
    return speech / speech.pow(2).mean().sqrt()


def _log_mel(clips: Tensor, n_mels: int) -> Tensor:
    """Per-clip standardized log-mel spectrograms ``[N, 1, n_mels, frames]`` of ``[N, samples]`` clips."""
    import torchaudio.transforms as audio_transforms

    melspec = audio_transforms.MelSpectrogram(
        sample_rate=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP_LENGTH, n_mels=n_mels
    )
    to_db = audio_transforms.AmplitudeToDB(stype="power", top_db=TOP_DB)
    chunks = []
    with torch.no_grad():
        for chunk in clips.split(256):
            # AmplitudeToDB applies top_db per leading index of a 4-D input: one clip at a time.
            log_mel = to_db(melspec(chunk).unsqueeze(1))
            mean = log_mel.mean(dim=(1, 2, 3), keepdim=True)
            std = log_mel.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-5)
            chunks.append((log_mel - mean) / std)
    return torch.cat(chunks)


def _espeak_version(executable: str) -> str:
    result = subprocess.run([executable, "--version"], capture_output=True, text=True, timeout=60, check=False)
    return result.stdout.strip()


def _save_atomically(data: dict[str, Any], path: Path) -> None:
    """Writes ``data`` to ``path`` through a temporary file in the same directory and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        torch.save(data, temporary)
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


__all__ = ["AVDigitsDataModule", "Utterance"]
