"""The probe report: a rank-zero table for the console and a JSON file in the log directory."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pdmp_lightning.probing.outcome import ProbeOutcome

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
            task=outcome.task,
            chance=outcome.chance_level,
            num_classes=outcome.num_classes,
            cost=outcome.cost.as_dict(),
            epoch_batches=outcome.epoch_batches,
            val_samples=outcome.val_samples,
            doubts=outcome.doubts(),
            first_pass_progress={m: round(v, 4) for m, v in outcome.first_pass_progress().items()},
            validation=outcome.val_source,
            folded=outcome.folded,
            curves={
                m: {
                    "stopped": c.stopped,
                    "epochs": [round(e, 4) for e in c.epochs],
                    "val_scores": c.scores,
                    "train_losses": c.train_losses,
                    "best_epoch": c.best_epoch,
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
    skip: str | None = None,
) -> str:
    """A plain-text table of the ranking, the probe scores, why each probe stopped, and the coefficients.

    ``skip`` is the arguments that reproduce this training without the probes (default: the ranking).
    """
    header = f"{'rank':<5} {'modality':<16} {'probe ' + metric:>16} {'epochs':>7} {'stopped':>8} {'coefficient':>12}"
    lines = [header, "-" * len(header)]
    for index, modality in enumerate(ranking):
        score = f"{scores[modality]:.4f}" if scores else "given"
        curve = outcome.curves.get(modality) if outcome else None
        epochs, stopped = (f"{curve.trained_epochs:.3g}", curve.stopped) if curve else ("-", "-")
        mark = "  (dominant)" if index == 0 else ""
        lines.append(
            f"{index + 1:<5} {modality:<16} {score:>16} {epochs:>7} {stopped:>8} {coefficients[modality]:>12.4g}{mark}"
        )
    if outcome is not None:
        cost = outcome.cost
        lines.append(
            f"probes: {cost.seconds:.2f} s (set-up {cost.setup_seconds:.2f} s, "
            f"validation {cost.validation_seconds:.2f} s)"
            f"; skip them next time with {skip or f'ranking={list(ranking)!r}'}"
        )
    return "\n".join(lines)


def cost_message(outcome: ProbeOutcome, skip: str) -> str:
    """One line on what the probes cost against the main training (its epoch time must be measured).

    ``skip`` is the arguments that reproduce the training without the probes (``ranking=[...]``).
    """
    cost = outcome.cost
    assert cost.share is not None and cost.main_epoch_seconds is not None and cost.main_epochs is not None
    message = (
        f"the probes took {cost.seconds:.2f} s, {cost.share:.0%} of the main training's estimated "
        f"{cost.main_seconds:.1f} s ({cost.main_epochs:g} epoch{'' if cost.main_epochs == 1 else 's'} of "
        f"{cost.main_epoch_seconds:.2f} s)"
    )
    if cost.over_target:
        message += (
            f", more than the cost target of {cost.target:.0%}: settling the ranking takes this long whatever the main "
            f"training's length. To skip the probes next time pass {skip}"
        )
    return message + "."
