"""The audio features of the recipes: AVE's log spectrogram and Kinetics-Sounds' kaldi fbank.

Each follows the official preprocessing (transplanted in ``tests/references/loaders.py`` and checked
against it to 1e-4): AVE as PMR's ``extractWav_SE`` (fanyunfeng-bit/Modal-Imbalance-PMR@3615e48,
``data/AVE/video_preprocessing.py`` lines 199-229), Kinetics-Sounds as OGM-GE's ``process_audio.py``
(GeWu-Lab/OGM-GE_CVPR2022@343dc1d, ``data/KineticSound/process_audio.py`` lines 30-49).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from pdmp_lightning.data.audiovisual.media import Resampler

__all__ = [
    "AVE_AUDIO_RATE",
    "AVE_NOVERLAP",
    "AVE_NPERSEG",
    "AVE_SECONDS",
    "AVE_SHAPE",
    "AVE_TUKEY_ALPHA",
    "AVE_WAV_RATE",
    "KS_AUDIO_RATE",
    "KS_MEAN",
    "KS_MEL_BINS",
    "KS_STD",
    "KS_TARGET_LENGTH",
    "ave_event_spectrogram",
    "ave_log_spectrogram",
    "kinetics_fbank",
]

AVE_AUDIO_RATE = 16_000
AVE_SECONDS = 10
AVE_NPERSEG = 512
AVE_NOVERLAP = 353
AVE_TUKEY_ALPHA = 0.25
AVE_SHAPE = (257, 1004)
#: The rate of the wavs the AVE recipe reads: moviepy's ``write_audiofile`` default (PMR ``mp4_to_wav.py``).
AVE_WAV_RATE = 44_100
KS_AUDIO_RATE = 16_000
KS_MEL_BINS = 128
KS_TARGET_LENGTH = 1024
KS_MEAN = -4.503877
KS_STD = 5.141276


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

    The recipe of the public AVE preprocessing (PMR's ``extractWav_SE``: ``scipy.signal.spectrogram``
    with its defaults), computed with ``torch.stft`` in float64: the waveform is repeated until it
    fills 10 s and cut there (the official ``np.tile`` by 10, then by 10 again, is the same for any
    segment of at least 0.1 s; a shorter one would give it fewer frames), clipped to [-1, 1]; segments
    of 512 samples every 159 (``noverlap`` 353), each minus its mean (``detrend="constant"``), a periodic
    Tukey(0.25) window, one-sided power spectral density; then ``log(psd + 1e-7)`` and
    ``(x - mean) / (std + 1e-9)`` over the whole clip.

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


def ave_event_spectrogram(
    waveform: np.ndarray,
    sample_rate: int,
    start: float,
    end: float,
    resampler: Resampler | None = None,
) -> np.ndarray:
    """The AVE feature of one event segment, as PMR's ``extractWav_SE`` computes it from a whole video's audio.

    The official steps: ``librosa.load(wav, sr=16000)`` (channels averaged, soxr "HQ", librosa's length:
    ``Resampler``), then ``samples[16000 * start:16000 * end]``
    with the annotation's whole seconds, then ``ave_log_spectrogram``. Times with a fraction (not in
    AVE's annotations, which the official code reads with ``int()``) are rounded to the nearest sample.

    Args:
        waveform: The video's audio, ``[n]`` or ``[channels, n]``, in [-1, 1].
        sample_rate: Its rate in Hz.
        start: The event's start, seconds from the start of the audio.
        end: The event's end.
        resampler: A resampler to 16 kHz (None: a new one).

    Returns:
        float32 ``[257, 1004]``.

    Raises:
        ValueError: The segment holds no sample of the audio.

    >>> ave_event_spectrogram(np.zeros((2, 44100), dtype=np.float32), 44100, 0, 1).shape
    (257, 1004)
    """
    samples = np.asarray(waveform, dtype=np.float32)
    if samples.ndim == 2:
        samples = np.mean(samples, axis=0)  # librosa.to_mono
    resampled = (resampler if resampler is not None else Resampler(AVE_AUDIO_RATE))(samples, sample_rate)
    first, last = round(AVE_AUDIO_RATE * start), round(AVE_AUDIO_RATE * end)
    segment = resampled[first:last]
    if segment.size == 0:
        seconds = resampled.size / AVE_AUDIO_RATE
        raise ValueError(f"the event segment [{start:g}, {end:g}] s holds no sample of {seconds:g} s of audio")
    return ave_log_spectrogram(segment, AVE_AUDIO_RATE)


def kinetics_fbank(waveform: np.ndarray, sample_rate: int = KS_AUDIO_RATE) -> np.ndarray:
    """The Kinetics-Sounds audio feature: a normalised kaldi fbank, 1024 x 128.

    OGM-GE's ``process_audio.py`` (the AST recipe): the waveform minus its mean (over all channels),
    ``torchaudio.compliance.kaldi.fbank`` of its first channel (kaldi's default ``channel``; 128 mel bins,
    10 ms shift, 25 ms Hanning window, ``htk_compat``, no energy, no dither) at the waveform's own rate,
    zero-padded or cut to 1024 frames, then ``(x - (-4.503877)) / (2 * 5.141276)`` (padding happens
    before the normalisation).

    Args:
        waveform: Samples in [-1, 1], ``[n]`` or ``[channels, n]``, at least one 25 ms window long.
        sample_rate: Their rate in Hz.

    Returns:
        float32 array ``[1024, 128]``.

    >>> kinetics_fbank(np.zeros(16000, dtype=np.float32)).shape
    (1024, 128)
    """
    kaldi = _kaldi()
    samples = torch.as_tensor(np.asarray(waveform, dtype=np.float32))
    samples = samples.reshape(1, -1) if samples.ndim == 1 else samples
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
