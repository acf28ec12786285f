"""The probe report: a rank-zero table for the console and a JSON file in the log directory."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pdmp_lightning.probing.runner import ProbeOutcome

REPORT_FILENAME = "pdmp_probe_report.json"


def probe_report(
    outcome: ProbeOutcome | None,
    ranking: Sequence[str],
    coefficients: Mapping[str, float],
    metric: str,
    config: Mapping[str, Any],
) -> dict[str, Any]:
    """The report as a JSON-ready dict (``outcome`` is None when the ranking was given)."""
    report: dict[str, Any] = {
        "ranking": list(ranking),
        "dominant": ranking[0],
        "coefficients": dict(coefficients),
        "metric": metric,
        "source": "probes" if outcome is not None else "given",
        "config": dict(config),
    }
    if outcome is not None:
        report.update(
            scores=outcome.scores,
            num_classes=outcome.num_classes,
            seconds=round(outcome.seconds, 3),
            train_batches_per_epoch=outcome.train_batches_per_epoch,
            main_train_batches=outcome.main_train_batches,
            val_samples=outcome.val_samples,
            doubts=outcome.doubts(),
            validation=outcome.val_source,
            curves={
                m: {
                    "val_scores": c.scores,
                    "train_losses": c.train_losses,
                    "best_epoch": c.best_epoch,
                    "stopped": c.stopped,
                }
                for m, c in outcome.curves.items()
            },
        )
    return report


def write_json_atomically(path: Path, payload: Mapping[str, Any]) -> None:
    """Writes ``payload`` to ``path`` through a temporary file and a rename: never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    ) as handle:
        json.dump(payload, handle, indent=2, sort_keys=False)
        handle.write("\n")
        temporary = Path(handle.name)
    try:
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def format_table(
    ranking: Sequence[str],
    coefficients: Mapping[str, float],
    scores: Mapping[str, float] | None,
    metric: str,
    outcome: ProbeOutcome | None = None,
) -> str:
    """A plain-text table of the ranking, the probe scores and the coefficients."""
    header = f"{'rank':<5} {'modality':<16} {'probe ' + metric:>16} {'epochs':>7} {'coefficient':>12}"
    lines = [header, "-" * len(header)]
    for index, modality in enumerate(ranking):
        score = f"{scores[modality]:.4f}" if scores else "given"
        epochs = str(len(outcome.curves[modality].scores)) if outcome else "-"
        mark = "  (dominant)" if index == 0 else ""
        lines.append(f"{index + 1:<5} {modality:<16} {score:>16} {epochs:>7} {coefficients[modality]:>12.4g}{mark}")
    return "\n".join(lines)
