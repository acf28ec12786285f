"""``python -m pdmp_lightning.prepare``: the layouts it writes, resuming, atomic outputs, clear errors.

The raw media are tiny clips generated with ffmpeg (which CI installs: ``apt-get install ffmpeg``).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile

import pdmp_lightning.prepare.kinetics_sounds as kinetics_sounds_module
from pdmp_lightning.prepare import KS_MEAN, KS_STD, ave_log_spectrogram, main

FFMPEG = shutil.which("ffmpeg") or "ffmpeg"
QUIET = ["--no-progress"]


def _ffmpeg(*arguments: str) -> None:
    subprocess.run([FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *arguments], check=True)


def _video(path: Path, seconds: int, audio: bool = True, rate: int = 5) -> Path:
    inputs = ["-f", "lavfi", "-i", f"testsrc=size=64x48:rate={rate}:duration={seconds}"]
    if audio:
        inputs += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-shortest"]
    _ffmpeg(*inputs, str(path))
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 2 s mp4 and flv with sound, a 2 s mp4 without sound, a 12 s mp4, a 1 s wav and a 1 s mp3."""
    folder = tmp_path_factory.mktemp("media")
    wav = folder / "tone.wav"
    soundfile.write(wav, 0.3 * np.sin(np.arange(16_000) * 0.1).astype(np.float32), 16_000, subtype="PCM_16")
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:duration=1", str(folder / "tone.mp3"))
    return {
        "mp4": _video(folder / "clip.mp4", 2),
        "flv": _video(folder / "clip.flv", 2),
        "silent": _video(folder / "silent.mp4", 2, audio=False),
        "long": _video(folder / "long.mp4", 12, rate=1),
        "wav": wav,
        "mp3": folder / "tone.mp3",
    }


def _jpgs(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.glob("*.jpg"))


def _leftovers(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.name.endswith(".prepare-tmp")]


# --------------------------------------------------------------------------------------------------
# CREMA-D


def _cremad_raw(root: Path, media: dict[str, Path]) -> Path:
    audio, video = root / "AudioWAV", root / "VideoFlash"
    audio.mkdir(parents=True)
    video.mkdir()
    for clip in ("1001_DFA_ANG_XX", "1002_IEO_ANG_HI", "1003_IEO_NEU_XX"):
        shutil.copy(media["flv"], video / f"{clip}.flv")
    shutil.copy(media["wav"], audio / "1001_DFA_ANG_XX.wav")
    shutil.copy(media["wav"], audio / "1002_IEO_ANG_HI.wav")
    shutil.copy(media["mp3"], audio / "1003_IEO_NEU_XX.mp3")  # not a wav: re-encoded
    shutil.copy(media["wav"], audio / "1004_DFA_SAD_XX.wav")  # no video: skipped
    shutil.copy(media["flv"], video / "1005_DFA_HAP_XX.flv")
    soundfile.write(audio / "1005_DFA_HAP_XX.wav", np.zeros(0, dtype=np.float32), 16_000)  # empty: fails
    (video / "1006_DFA_FEA_XX.flv").write_bytes(b"not a video at all")  # ffmpeg fails
    shutil.copy(media["wav"], audio / "1006_DFA_FEA_XX.wav")
    return root


def test_cremad_layout_with_a_drawn_split(
    tmp_path: Path, media: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    raw, out = _cremad_raw(tmp_path / "raw", media), tmp_path / "out"
    code = main(["cremad", "--raw", str(raw), "--out", str(out), "--test-fraction", "0.5", "--seed", "3"])
    report = capsys.readouterr()
    assert code == 0
    ready = ["1001_DFA_ANG_XX", "1002_IEO_ANG_HI", "1003_IEO_NEU_XX"]
    for clip in ready:
        assert _jpgs(out / "Image-01-FPS" / clip) == ["00001.jpg", "00002.jpg"]  # 2 s at 1 fps
    # The wav as librosa.load(sr=22050) reads it, in float32 (the official recipe's first step, done once).
    prepared = soundfile.info(out / "AudioWAV" / "1001_DFA_ANG_XX.wav")
    assert (prepared.samplerate, prepared.channels, prepared.subtype) == (22_050, 1, "FLOAT")
    assert prepared.frames == 22_050  # ceil(16000 * 22050 / 16000)
    encoded = soundfile.info(out / "AudioWAV" / "1003_IEO_NEU_XX.wav")
    assert (encoded.samplerate, encoded.channels, encoded.subtype) == (22_050, 1, "PCM_16")
    # A clip that fails keeps the outputs it finished (whole files; a rerun redoes only the rest) but gets no row.
    assert sorted(path.name for path in (out / "Image-01-FPS").iterdir()) == [*ready, "1005_DFA_HAP_XX"]
    assert sorted(path.stem for path in (out / "AudioWAV").iterdir()) == ready
    rows = {
        side: [line.split(",") for line in (out / f"{side}.csv").read_text().splitlines()] for side in ("train", "test")
    }
    assert sorted(clip for side in rows.values() for clip, _ in side) == ready  # no header, ready clips only
    assert all(emotion == clip.split("_")[2] for side in rows.values() for clip, emotion in side)
    assert [emotion for _, emotion in rows["test"]].count("ANG") == 1  # stratified: half of each emotion
    assert [emotion for _, emotion in rows["test"]].count("NEU") == 1
    assert "video not found: 1" in report.out and "1004_DFA_SAD_XX" in report.out
    assert "empty wav: 1" in report.out and "ffmpeg error: 1" in report.out
    assert "failed 1006_DFA_FEA_XX: ffmpeg error" in report.err  # reported as it happens
    assert "prepare cremad" in report.err  # the progress bar
    assert not _leftovers(out)


def test_cremad_copies_given_splits(tmp_path: Path, media: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    raw, out, splits = _cremad_raw(tmp_path / "raw", media), tmp_path / "out", tmp_path / "splits"
    splits.mkdir()
    (splits / "train.csv").write_bytes(b"\xef\xbb\xbf1001_DFA_ANG_XX,ANG\r\n1004_DFA_SAD_XX,SAD\r\n")
    (splits / "test.csv").write_bytes(b"1003_IEO_NEU_XX,NEU\r\n")
    assert main(["cremad", "--raw", str(raw), "--out", str(out), "--splits", str(splits), *QUIET]) == 0
    for name in ("train.csv", "test.csv"):
        assert (out / name).read_bytes() == (splits / name).read_bytes()
    assert "train.csv: 2 rows, 1 name clips without complete outputs (e.g. 1004_DFA_SAD_XX)" in capsys.readouterr().out


def test_resume_skips_complete_outputs_and_overwrite_redoes_them(
    tmp_path: Path, media: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    raw, out = _cremad_raw(tmp_path / "raw", media), tmp_path / "out"
    arguments = ["cremad", "--raw", str(raw), "--out", str(out), *QUIET]
    assert main(arguments) == 0
    capsys.readouterr()
    frame = out / "Image-01-FPS" / "1001_DFA_ANG_XX" / "00001.jpg"
    stamp = frame.stat().st_mtime_ns
    shutil.rmtree(out / "Image-01-FPS" / "1002_IEO_ANG_HI")
    stale = out / "AudioWAV" / ".1001_DFA_ANG_XX.wav.abc123.prepare-tmp"
    stale.write_bytes(b"half a file")  # as left by a killed run

    assert main(arguments) == 0
    report = capsys.readouterr().out
    assert "processed:        1" in report and "already complete: 2" in report
    assert _jpgs(out / "Image-01-FPS" / "1002_IEO_ANG_HI") == ["00001.jpg", "00002.jpg"]
    assert frame.stat().st_mtime_ns == stamp
    assert not stale.exists() and "removed 1 temporaries" in report

    assert main([*arguments, "--overwrite"]) == 0
    assert "processed:        3" in capsys.readouterr().out
    assert frame.stat().st_mtime_ns != stamp
    assert _jpgs(frame.parent) == ["00001.jpg", "00002.jpg"]
    assert not _leftovers(out)


def test_exit_status_is_one_when_nothing_is_usable(tmp_path: Path, media: dict[str, Path]) -> None:
    raw = tmp_path / "raw"
    (raw / "VideoFlash").mkdir(parents=True)
    (raw / "AudioWAV").mkdir()
    shutil.copy(media["wav"], raw / "AudioWAV" / "1001_DFA_ANG_XX.wav")
    assert main(["cremad", "--raw", str(raw), "--out", str(tmp_path / "out"), *QUIET]) == 1


# --------------------------------------------------------------------------------------------------
# AVE


def _ave_raw(root: Path, media: dict[str, Path]) -> Path:
    (root / "AVE").mkdir(parents=True)
    shutil.copy(media["mp4"], root / "AVE" / "whole0000001.mp4")
    shutil.copy(media["mp4"], root / "AVE" / "secondhalf02.mp4")
    rows = ["Church bell&whole0000001&good&0&2", "Dog&secondhalf02&good&1&2", "Dog&missingvideo&bad&0&10"]
    header = "\ufeffCategory&VideoID&Quality&StartTime&EndTime\r\n"
    (root / "Annotations.txt").write_text(header + "\r\n".join(rows) + "\r\n", encoding="utf-8", newline="")
    for name, chosen in (("trainSet.txt", rows[:1]), ("valSet.txt", rows[1:2]), ("testSet.txt", rows[2:])):
        (root / name).write_text("\n".join(chosen) + "\n", encoding="utf-8")
    return root


def test_ave_layout(tmp_path: Path, media: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    raw, out = _ave_raw(tmp_path / "raw", media), tmp_path / "out"
    assert main(["ave", "--raw", str(raw), "--out", str(out), "--workers", "2", *QUIET]) == 0
    report = capsys.readouterr().out
    assert _jpgs(out / "Image-01-FPS-SE" / "whole0000001") == ["00001.jpg", "00002.jpg"]
    assert _jpgs(out / "Image-01-FPS-SE" / "secondhalf02") == ["00001.jpg"]  # 1 fps inside [1, 2]
    for clip in ("whole0000001", "secondhalf02"):
        spectrogram = np.load(out / "Audio-1004-SE" / f"{clip}.npy", allow_pickle=False)
        assert spectrogram.shape == (257, 1004) and spectrogram.dtype == np.float32
        assert abs(float(spectrogram.mean())) < 1e-3 and abs(float(spectrogram.std()) - 1.0) < 1e-3
    assert sorted(path.name for path in (out / "Audio-1004-SE").iterdir()) == ["secondhalf02.npy", "whole0000001.npy"]
    for name in ("trainSet.txt", "valSet.txt", "testSet.txt", "Annotations.txt"):
        assert (out / name).read_bytes() == (raw / name).read_bytes()
    assert "video not found: 1, e.g. missingvideo" in report
    assert "testSet.txt: 1 rows, 1 name clips without complete outputs" in report
    assert not _leftovers(out)


def _reference_spectrogram(waveform: np.ndarray, rate: int = 16_000) -> np.ndarray:
    """scipy.signal.spectrogram's defaults, written out with numpy (tiled to 10 s, z-scored)."""
    samples = np.tile(waveform.astype(np.float64), -(-10 * rate // waveform.size))[: 10 * rate].clip(-1, 1)
    size, hop, alpha = 512, 159, 0.25
    position = np.arange(size) / size  # the periodic window: the first ``size`` points of size + 1
    window = np.ones(size)
    rising, falling = position < alpha / 2, position > 1 - alpha / 2
    window[rising] = 0.5 * (1 - np.cos(2 * np.pi * position[rising] / alpha))
    window[falling] = 0.5 * (1 - np.cos(2 * np.pi * (1 - position[falling]) / alpha))
    starts = range(0, samples.size - size + 1, hop)
    frames = np.stack([samples[start : start + size] for start in starts])
    frames = (frames - frames.mean(axis=1, keepdims=True)) * window
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2 / (rate * (window**2).sum())
    power[:, 1:-1] *= 2
    log_power = np.log(power.T + 1e-7)
    normalised: np.ndarray = (log_power - log_power.mean()) / (log_power.std() + 1e-9)
    return normalised


@pytest.mark.parametrize("length", [400, 16_000, 160_000])
def test_ave_spectrogram_matches_the_scipy_recipe(length: int) -> None:
    generator = np.random.default_rng(length)
    waveform = (0.3 * generator.standard_normal(length) + 0.1).astype(np.float32)
    ours, reference = ave_log_spectrogram(waveform), _reference_spectrogram(waveform)
    assert ours.shape == reference.shape == (257, 1004)
    np.testing.assert_allclose(ours, reference, atol=1e-4)


# --------------------------------------------------------------------------------------------------
# Kinetics-Sounds


def _kinetics_raw(root: Path, media: dict[str, Path]) -> tuple[Path, Path]:
    videos, splits = root / "videos", root / "splits"
    (videos / "playing drums").mkdir(parents=True)
    splits.mkdir()
    shutil.copy(media["mp4"], videos / "playing drums" / "abc_000010_000020.mp4")
    shutil.copy(media["long"], videos / "long_000000_000012.mp4")
    shutil.copy(media["silent"], videos / "silent_000000_000002.mp4")
    (splits / "my_train.txt").write_text(
        "\ufeffabc_000010_000020,10,3\r\nlong_000000_000012,10,0\r\nabsent_000000_000010,10,1\r\n", encoding="utf-8"
    )
    (splits / "my_test.txt").write_text("silent_000000_000002 10 2\n", encoding="utf-8")  # space separated
    return videos, splits


def test_kinetics_sounds_layout(tmp_path: Path, media: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    videos, splits = _kinetics_raw(tmp_path / "raw", media)
    out = tmp_path / "out"
    assert main(["kinetics_sounds", "--raw", str(videos), "--splits", str(splits), "--out", str(out), *QUIET]) == 0
    report = capsys.readouterr().out
    assert _jpgs(out / "visual" / "abc_000010_000020") == ["frame_00001.jpg", "frame_00002.jpg"]
    assert _jpgs(out / "visual" / "long_000000_000012") == [
        f"frame_{index:05d}.jpg" for index in range(1, 11)
    ]  # at most 10
    fbank = np.load(out / "audio" / "abc_000010_000020.npy", allow_pickle=False)
    assert fbank.shape == (1024, 128) and fbank.dtype == np.float32
    padding = (0.0 - KS_MEAN) / (2 * KS_STD)
    np.testing.assert_allclose(fbank[-1], padding, rtol=1e-6)  # 2 s = 198 frames, zero-padded to 1024
    assert not np.allclose(fbank[0], padding)
    long_fbank = np.load(out / "audio" / "long_000000_000012.npy", allow_pickle=False)
    assert long_fbank.shape == (1024, 128) and not np.allclose(long_fbank[-1], padding)  # 12 s: cut
    for name in ("my_train.txt", "my_test.txt"):
        assert (out / name).read_bytes() == (splits / name).read_bytes()
    assert "video not found: 1, e.g. absent_000000_000010" in report
    assert "no audio stream: 1, e.g. silent_000000_000002" in report
    assert not (out / "audio" / "silent_000000_000002.npy").exists()
    assert not _leftovers(out)


def test_an_interrupted_run_leaves_no_half_file_and_resumes(
    tmp_path: Path, media: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    videos, splits = _kinetics_raw(tmp_path / "raw", media)
    out = tmp_path / "out"
    arguments = ["kinetics_sounds", "--raw", str(videos), "--splits", str(splits), "--out", str(out), "--limit", "1"]

    def interrupted(*_: object, **__: object) -> np.ndarray:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(kinetics_sounds_module, "kinetics_fbank", interrupted)
        assert main(arguments) == 130
    assert "run the same command again to resume" in capsys.readouterr().err
    assert _jpgs(out / "visual" / "abc_000010_000020")  # the frames finished before the interruption
    assert not list(out.glob("**/*.npy")) and not _leftovers(out)

    assert main([*arguments, *QUIET]) == 0
    report = capsys.readouterr().out
    assert "processed:        1" in report and "--limit 1: 3 further clips not looked at" in report
    assert np.load(out / "audio" / "abc_000010_000020.npy").shape == (1024, 128)
    assert [path.name for path in (out / "visual").iterdir()] == ["abc_000010_000020"]
    assert [path.name for path in (out / "audio").iterdir()] == ["abc_000010_000020.npy"]


# --------------------------------------------------------------------------------------------------
# errors and help


@pytest.mark.parametrize("how", ["not on PATH", "--ffmpeg /nonexistent"])
def test_missing_ffmpeg_is_a_clear_error(
    how: str,
    tmp_path: Path,
    media: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    raw = _cremad_raw(tmp_path / "raw", media)
    arguments = ["cremad", "--raw", str(raw), "--out", str(tmp_path / "out")]
    if how == "not on PATH":
        monkeypatch.setattr(shutil, "which", lambda *_, **__: None)
    else:
        arguments += ["--ffmpeg", "/nonexistent"]
    assert main(arguments) == 2
    message = capsys.readouterr().err
    assert "`--ffmpeg`" in message and "apt-get install ffmpeg" in message and "--ffmpeg PATH" in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (
            ["cremad", "--raw", "{tmp}/nowhere", "--out", "{tmp}/out"],
            "`--raw`: got '{tmp}/nowhere'; expected an existing",
        ),
        (["cremad", "--raw", "{tmp}", "--out", "{tmp}/out"], "`--raw`: got '{tmp}'; expected a CREMA-D folder"),
        (["ave", "--raw", "{tmp}", "--out", "{tmp}"], "`--out`: got '{tmp}'; expected a folder different from --raw"),
        (["ave", "--raw", "{tmp}", "--out", "{tmp}/out", "--seed", "1"], "`--seed`: got 1"),
        (["cremad", "--raw", "{tmp}", "--out", "{tmp}/o", "--test-fraction", "1.5"], "strictly between 0 and 1"),
        (
            ["kinetics_sounds", "--raw", "{tmp}", "--out", "{tmp}/out"],
            "`--raw`: got '{tmp}'; expected a folder holding",
        ),
    ],
)
def test_configuration_errors_name_the_argument(
    arguments: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([argument.format(tmp=tmp_path) for argument in arguments]) == 2
    assert expected.format(tmp=tmp_path) in capsys.readouterr().err


def test_help_names_the_external_program(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "ffmpeg" in text and "apt-get install ffmpeg" in text and "Image-01-FPS-SE/<id>" in text


# --------------------------------------------------------------------------------------------------
# what prepare writes is what the datamodules read


def test_prepared_ave_and_kinetics_sounds_load_in_their_datamodules(tmp_path: Path, media: dict[str, Path]) -> None:
    from pdmp_lightning.data import AVEDataModule, KineticsSoundsDataModule

    raw = tmp_path / "ave_raw"
    (raw / "AVE").mkdir(parents=True)
    rows = []
    for index, category in enumerate(("Dog", "Church bell", "Dog")):
        shutil.copy(media["mp4"], raw / "AVE" / f"clip{index}.mp4")
        rows.append(f"{category}&clip{index}&good&0&2")
    for name, row in zip(("trainSet.txt", "valSet.txt", "testSet.txt"), rows, strict=True):
        (raw / name).write_text(row + "\n", encoding="utf-8")
    assert main(["ave", "--raw", str(raw), "--out", str(tmp_path / "ave"), *QUIET]) == 0
    ave = AVEDataModule(str(tmp_path / "ave"), batch_size=1, num_frames=2, image_size=16)
    ave.setup("fit")
    batch = next(iter(ave.train_dataloader()))
    assert tuple(batch["audio"].shape) == (1, 1, 257, 1004) and tuple(batch["visual"].shape) == (1, 3, 2, 16, 16)

    videos, splits = tmp_path / "ks_videos", tmp_path / "ks_splits"
    videos.mkdir()
    splits.mkdir()
    names = [f"clip_{index:06d}_000002" for index in range(5)]
    for name in names:
        shutil.copy(media["mp4"], videos / f"{name}.mp4")
    train_rows = [f"{name},10,{index % 2}" for index, name in enumerate(names[:4])]
    (splits / "my_train.txt").write_text("\n".join(train_rows) + "\n", encoding="utf-8")
    (splits / "my_test.txt").write_text(f"{names[4]},10,1\n", encoding="utf-8")
    arguments = ["kinetics_sounds", "--raw", str(videos), "--splits", str(splits), "--out", str(tmp_path / "ks")]
    assert main([*arguments, *QUIET]) == 0
    kinetics = KineticsSoundsDataModule(
        str(tmp_path / "ks"), batch_size=2, num_frames=2, image_size=16, val_fraction=0.25
    )
    kinetics.setup("fit")
    batch = next(iter(kinetics.train_dataloader()))
    assert tuple(batch["audio"].shape) == (2, 1, 1024, 128) and tuple(batch["visual"].shape) == (2, 3, 2, 16, 16)
    assert kinetics.num_classes == 2 and kinetics.split_sizes()["val"] == 1
