"""A run killed with SIGKILL resumes from its last checkpoint; one killed while probing probes afresh."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest

from pdmp_lightning.probing.runner import ProbeRunner
from tests import crash_run

ROOT = Path(__file__).resolve().parents[1]
RESUMING_IN_PLACE = pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")


def run_until(mode: str, root: Path, marker: str, timeout: float = 120.0) -> None:
    """Starts the run in a subprocess, waits for ``marker`` and kills it with SIGKILL."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = root / f"{mode}.stderr"
    with open(log, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.crash_run", mode, str(root)],
            cwd=root,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        deadline = time.monotonic() + timeout
        try:
            while not (root / marker).exists():
                if process.poll() is not None:
                    raise AssertionError(f"the run ended before {marker}: {log.read_text()[-2000:]}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"no {marker} after {timeout} s")
                time.sleep(0.2)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


class Watch(pl.Callback):
    """Records the first global step and, per epoch, whether PDMP modulates."""

    def __init__(self, pdmp: pl.Callback) -> None:
        self.pdmp, self.first_step, self.modulating = pdmp, None, {}

    def on_train_batch_start(self, trainer: pl.Trainer, *args: object) -> None:
        if self.first_step is None:
            self.first_step = trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        self.modulating[trainer.current_epoch] = self.pdmp.is_modulating  # type: ignore[attr-defined]


@RESUMING_IN_PLACE
def test_a_killed_run_resumes_with_its_ranking_without_probing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_until("train", tmp_path, "epoch_1.done")
    report = json.loads((tmp_path / "logs" / "version_0" / "pdmp_probe_report.json").read_text())
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()

    def no_probe(*args: object, **kwargs: object) -> None:
        raise AssertionError("the probes ran again after a resume")

    monkeypatch.setattr(ProbeRunner, "run", no_probe)
    pdmp = crash_run.callback()
    watch = Watch(pdmp)
    run = crash_run.trainer(tmp_path, max_epochs=4, extra=[pdmp, watch], version=1)
    run.fit(crash_run.model(), ckpt_path=tmp_path / "checkpoints" / "last.ckpt")
    assert pdmp.ranking == report["ranking"] and pdmp.coefficients == report["coefficients"]
    steps_per_epoch = 10  # 320 samples, batches of 32
    assert watch.first_step == 2 * steps_per_epoch and run.global_step == 4 * steps_per_epoch
    assert watch.modulating == {2: True, 3: True}  # the window (from epoch 2) continues


def test_a_run_killed_while_probing_leaves_no_report_and_probes_afresh(tmp_path: Path) -> None:
    run_until("probe", tmp_path, "probing")
    log_dir = tmp_path / "logs" / "version_0"
    assert not (log_dir / "pdmp_probe_report.json").exists()
    assert not list(tmp_path.rglob("*.tmp")) and not (tmp_path / "checkpoints").exists()

    pdmp = crash_run.callback()
    with pytest.warns(UserWarning, match="nothing will be modulated in this fit"):  # one epoch, warm-up only
        crash_run.trainer(tmp_path, max_epochs=1, extra=[pdmp], version=1).fit(crash_run.model())
    assert pdmp.probe_outcome is not None
    report = tmp_path / "logs" / "version_1" / "pdmp_probe_report.json"
    assert json.loads(report.read_text())["ranking"] == pdmp.ranking
