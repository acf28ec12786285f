"""A PNG of a run: the probes' validation curves, per-modality gradient norms, validation accuracy."""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from collections import defaultdict
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pdmp_lightning.probing.report import REPORT_FILENAME

PLOT_FILENAME = "training_curves.png"


def read_metrics_csv(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Reads a CSVLogger ``metrics.csv`` into metric -> [(step, value)] (empty cells skipped)."""
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            step = int(float(row.get("step") or 0))
            for name, cell in row.items():
                if name in ("step", "epoch") or not cell:
                    continue
                value = float(cell)
                if math.isfinite(value):
                    series[name].append((step, value))
    return dict(series)


def plot_run(run_dir: str | Path, filename: str = PLOT_FILENAME) -> Path | None:
    """Draws what a run directory holds into ``run_dir/filename``.

    Panels, each when its data is there: the probe curves (from the probe report), the
    per-modality gradient norms and the validation accuracy (from the CSVLogger's ``metrics.csv``).

    Args:
        run_dir: A run (log) directory.
        filename: Name of the PNG written into it.

    Returns:
        The PNG's path, or None when the directory holds nothing to plot.

    Examples:
        >>> import tempfile
        >>> plot_run(tempfile.mkdtemp()) is None  # an empty directory: nothing to draw
        True
    """
    run_dir = Path(run_dir)
    report_path, metrics_path = run_dir / REPORT_FILENAME, run_dir / "metrics.csv"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    curves = report.get("curves", {})
    metrics = read_metrics_csv(metrics_path) if metrics_path.is_file() else {}
    norms = {name: points for name, points in metrics.items() if "/grad_norm/" in name}
    accuracy = metrics.get("val_accuracy", [])
    panels = [p for p, present in (("probes", curves), ("norms", norms), ("accuracy", accuracy)) if present]
    if not panels:
        return None
    figure = Figure(figsize=(5 * len(panels), 4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for axis, panel in zip(axes, panels, strict=True):
        if panel == "probes":
            for modality, curve in curves.items():
                epochs = curve.get("epochs") or range(1, len(curve["val_scores"]) + 1)
                stopped = f" ({curve['stopped']})" if curve.get("stopped") else ""
                axis.plot(epochs, curve["val_scores"], marker="o", label=modality + stopped)
            task = f"{report.get('task', 'multiclass')}, {report.get('metric', 'accuracy')}"
            axis.set(title=f"Unimodal probes ({task})", xlabel="probe epoch", ylabel="validation score")
        elif panel == "norms":
            for name, points in sorted(norms.items()):
                axis.plot(*zip(*points, strict=True), label=name.split("/grad_norm/")[1])
            axis.set(title="Gradient norm per modality", xlabel="step", ylabel="L2 norm", yscale="log")
        else:
            axis.plot(*zip(*accuracy, strict=True), marker=".")
            axis.set(title="Validation accuracy", xlabel="step", ylabel="accuracy")
        if panel != "accuracy":
            axis.legend()
        axis.grid(alpha=0.3)
    target = run_dir / filename
    # Written through a temporary file and a rename, like the probe report: never half a file.
    handle, temporary = tempfile.mkstemp(dir=run_dir, prefix=f".{filename}.", suffix=".png")
    os.close(handle)
    try:
        figure.savefig(temporary, dpi=110)
        os.replace(temporary, target)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return target
