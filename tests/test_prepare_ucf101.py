"""``python -m pdmp_lightning.prepare ucf101``: frames, optical flow, lists, resuming; the datamodule reads it.

The raw videos are two 2-second clips generated with ffmpeg's lavfi ``testsrc`` (CI installs ffmpeg).
"""

from __future__ import annotations

import shutil
import subprocess
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pdmp_lightning.data import UCF101DataModule
from pdmp_lightning.prepare import main
from pdmp_lightning.prepare.ucf101 import compute_flow, default_flow_method, flow_to_uint8

cv2 = pytest.importorskip("cv2")

FFMPEG = shutil.which("ffmpeg") or "ffmpeg"
QUIET = ["--no-progress"]
CLIPS = ["v_ApplyEyeMakeup_g01_c01", "v_Archery_g01_c01"]


def _raw(root: Path) -> Path:
    """Two 2 s videos at 5 fps, a broken one, and the official lists (BOM, CRLF) naming also a missing one."""
    for clip, pattern in zip(CLIPS, ("testsrc", "testsrc2"), strict=True):
        folder = root / "UCF-101" / clip.split("_")[1]
        folder.mkdir(parents=True)
        source = f"{pattern}=size=64x48:rate=5:duration=2"
        command = [
            FFMPEG,
            "-nostdin",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            source,
            str(folder / f"{clip}.avi"),
        ]
        subprocess.run(command, check=True)
    (root / "UCF-101" / "Archery" / "v_Archery_g02_c01.avi").write_bytes(b"not a video")
    lists = root / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_bytes(b"\xef\xbb\xbf1 ApplyEyeMakeup\r\n2 Archery\r\n")
    train = f"ApplyEyeMakeup/{CLIPS[0]}.avi 1\r\nArchery/{CLIPS[1]}.avi 2\r\nArchery/v_Archery_g02_c01.avi 2\r\n"
    (lists / "trainlist01.txt").write_bytes(train.encode())
    (lists / "testlist01.txt").write_bytes(f"Archery/{CLIPS[1]}.avi\r\nArchery/v_Archery_g03_c01.avi/\r\n".encode())
    return root


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """The raw folder, the prepared folder and the report of the first run."""
    root = tmp_path_factory.mktemp("ucf101")
    raw, out = _raw(root / "raw"), root / "out"
    report = StringIO()
    with redirect_stdout(report):
        assert main(["ucf101", "--raw", str(raw), "--out", str(out), "--workers", "2", *QUIET]) == 0
    return raw, out, report.getvalue()


def _names(folder: Path, prefix: str = "") -> list[str]:
    return sorted(path.name for path in folder.glob(f"{prefix}*.jpg"))


def test_layout_flow_and_lists(prepared: tuple[Path, Path, str]) -> None:
    raw, out, report = prepared
    for clip in CLIPS:
        assert _names(out / "frames" / clip) == [f"{i:05d}.jpg" for i in range(1, 11)]  # every frame: 2 s at 5 fps
        assert _names(out / "flow" / clip, "flow_x_") == [f"flow_x_{i:05d}.jpg" for i in range(1, 10)]
        assert _names(out / "flow" / clip, "flow_y_") == [f"flow_y_{i:05d}.jpg" for i in range(1, 10)]
        with Image.open(out / "flow" / clip / "flow_x_00001.jpg") as image:
            assert image.mode == "L" and image.size == (64, 48)
            levels = np.asarray(image)
        assert int(levels.max()) - int(levels.min()) >= 4  # testsrc moves: not all zero flow (128)
    for name in ("classInd.txt", "trainlist01.txt", "testlist01.txt"):
        assert (out / "ucfTrainTestlist" / name).read_bytes() == (raw / "ucfTrainTestlist" / name).read_bytes()
    method = default_flow_method()
    assert (out / "flow_method.txt").read_text().startswith(f"{method}: ")
    assert f"optical flow: {method}: " in report
    assert "video not found: 1, e.g. v_Archery_g03_c01" in report
    assert "ffmpeg error: 1, e.g. v_Archery_g02_c01" in report
    assert "classInd.txt: 2 classes" in report
    assert "trainlist01.txt: 3 rows, 1 name clips without complete outputs (e.g. v_Archery_g02_c01)" in report
    assert not [path for path in out.rglob("*") if path.name.endswith(".prepare-tmp")]


def test_the_datamodule_reads_what_prepare_wrote(prepared: tuple[Path, Path, str]) -> None:
    _, out, _ = prepared
    datamodule = UCF101DataModule(str(out), batch_size=1, image_size=16, val_fraction=0.5)
    assert datamodule.num_classes == 2 and datamodule.class_names == ["ApplyEyeMakeup", "Archery"]
    with pytest.warns(UserWarning, match=r"2 of 5 listed clips \(train: 1, test: 1\)"):
        datamodule.setup()
    assert datamodule.split_sizes() == {"train": 1, "val": 1, "test": 1}
    batch = next(iter(datamodule.train_dataloader()))
    assert tuple(batch["rgb"].shape) == (1, 3, 3, 16, 16) and tuple(batch["flow"].shape) == (1, 2, 3, 16, 16)
    test = datamodule.datasets["test"][0]
    assert test["label"].item() == 1 and float(test["flow"].abs().max()) <= 1.0


def test_resume_method_mismatch_and_overwrite(
    prepared: tuple[Path, Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw, first, _ = prepared
    out = tmp_path / "out"
    shutil.copytree(first, out)
    flow = out / "flow" / CLIPS[0] / "flow_x_00001.jpg"
    stamp = flow.stat().st_mtime_ns
    shutil.rmtree(out / "flow" / CLIPS[1])
    arguments = ["ucf101", "--raw", str(raw), "--out", str(out), *QUIET]
    assert main(arguments) == 0
    report = capsys.readouterr().out
    assert "processed:        1" in report and "already complete: 1" in report
    assert flow.stat().st_mtime_ns == stamp and len(_names(out / "flow" / CLIPS[1], "flow_y_")) == 9
    other = "farneback" if default_flow_method() == "tvl1" else "tvl1"
    if other == "farneback":
        assert main([*arguments, "--flow", "farneback"]) == 2  # the flow on disk is TV-L1: refused, nothing touched
        assert "`--flow`: got 'farneback'; expected the method of the flow already under" in capsys.readouterr().err
        assert flow.stat().st_mtime_ns == stamp
        assert main([*arguments, "--flow", "farneback", "--overwrite"]) == 0
        assert (out / "flow_method.txt").read_text().startswith("farneback: ")
        assert flow.stat().st_mtime_ns != stamp and len(_names(out / "flow" / CLIPS[0], "flow_x_")) == 9


def test_without_contrib_farneback_is_the_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delattr(cv2, "optflow", raising=False)
    assert default_flow_method() == "farneback"
    _raw(tmp_path / "raw")
    arguments = ["ucf101", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "out"), "--flow", "tvl1"]
    assert main(arguments) == 2
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("method", ["tvl1", "farneback"])
def test_flow_measures_a_shift_in_pixels(method: str) -> None:
    if method == "tvl1" and default_flow_method() != "tvl1":
        pytest.skip("this OpenCV has no TV-L1 (opencv-contrib)")
    texture = cv2.GaussianBlur(np.random.default_rng(0).uniform(0, 255, (64, 80)), (0, 0), 2.0)
    previous = np.clip(texture, 0, 255).astype(np.uint8)
    current = np.roll(previous, 2, axis=1)  # everything moves 2 px to the right
    flow = compute_flow(previous, current, method)[8:-8, 8:-8]  # type: ignore[arg-type]
    assert abs(float(np.median(flow[..., 0])) - 2.0) < 0.3 and abs(float(np.median(flow[..., 1]))) < 0.3
    assert flow_to_uint8(np.array([2.0, -25.0])).tolist() == [140, 0]  # (2 + 20) * 255 / 40 = 140.25


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (
            ["ucf101", "--raw", "{tmp}", "--out", "{tmp}/out"],
            "`--raw`: got '{tmp}'; expected a folder holding the official",
        ),
        (["ucf101", "--raw", "{tmp}", "--out", "{tmp}/out", "--fps", "0"], "`--fps`: got 0.0"),
        (
            ["cremad", "--raw", "{tmp}", "--out", "{tmp}/out", "--flow", "tvl1"],
            "`--flow`: got 'tvl1'; expected no value",
        ),
    ],
)
def test_configuration_errors_name_the_argument(
    arguments: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([argument.format(tmp=tmp_path) for argument in arguments]) == 2
    assert expected.format(tmp=tmp_path) in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
