"""What a probing run produced: each probe's curve, why it stopped, what it cost, and any doubt."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

#: Why a probe stopped training.
PLATEAU, SETTLED, CAP = "plateau", "settled", "cap"


@dataclass
class ProbeCurve:
    """One probe's validation curve and why it stopped.

    Attributes:
        modality: The modality probed.
        epochs: Probe epochs trained at each validation pass.
        scores: Validation score at each pass.
        train_losses: Mean training loss since the previous pass.
        stopped: ``"plateau"``, ``"settled"`` or ``"cap"`` (empty while training).
    """

    modality: str
    epochs: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    train_losses: list[float] = field(default_factory=list)
    stopped: str = ""

    @property
    def best_score(self) -> float:
        """Best validation score reached."""
        return max(self.scores) if self.scores else float("nan")

    @property
    def best_epoch(self) -> float:
        """Probe epochs trained when the best score was reached (-1 before any pass)."""
        return self.epochs[self.scores.index(self.best_score)] if self.scores else -1.0

    @property
    def trained_epochs(self) -> float:
        """Probe epochs trained in all."""
        return self.epochs[-1] if self.epochs else 0.0

    def slope(self, window: int) -> float:
        """Score gained per probe epoch over the last ``window`` validation passes (0 with fewer than two)."""
        if len(self.scores) < 2:
            return 0.0
        first = max(0, len(self.scores) - 1 - window)
        span = self.epochs[-1] - self.epochs[first]
        return (self.scores[-1] - self.scores[first]) / span if span > 0 else 0.0

    def recent_gain(self, passes: int) -> float:
        """How far the best score rose over the last ``passes`` validation passes (inf with too few passes)."""
        if len(self.scores) <= passes:
            return math.inf
        return self.best_score - max(self.scores[:-passes])


@dataclass
class ProbeCost:
    """What the probes cost, and what the main training costs beside them.

    Attributes:
        seconds: Wall time of the probes, set-up and validation passes included.
        setup_seconds: Of which building the probes and reading the first batch.
        validation_seconds: Of which validation passes.
        main_epoch_seconds: Measured seconds of one main-training epoch (None until measured).
        main_epochs: Epochs the main training runs (fractional with ``max_steps``; None: unbounded).
        target: The ``cost_target`` share (None: no target).
    """

    seconds: float
    setup_seconds: float
    validation_seconds: float
    main_epoch_seconds: float | None = None
    main_epochs: float | None = None
    target: float | None = None

    @property
    def main_seconds(self) -> float | None:
        """Estimated seconds of the whole main training (measured epoch time x its epochs)."""
        if self.main_epoch_seconds is None or self.main_epochs is None:
            return None
        return self.main_epoch_seconds * self.main_epochs

    @property
    def share(self) -> float | None:
        """Probe seconds / main-training seconds (None until the main training's epoch time is known)."""
        main = self.main_seconds
        return self.seconds / main if main else None

    @property
    def over_target(self) -> bool:
        """Whether the probes took more than ``target`` of the main training's time."""
        share = self.share
        return share is not None and self.target is not None and share > self.target

    def as_dict(self) -> dict[str, float | None]:
        """JSON-ready figures (rounded)."""

        def rounded(value: float | None, digits: int = 3) -> float | None:
            return None if value is None else round(value, digits)

        return {
            "seconds": rounded(self.seconds),
            "setup_seconds": rounded(self.setup_seconds),
            "validation_seconds": rounded(self.validation_seconds),
            "main_epoch_seconds": rounded(self.main_epoch_seconds),
            "main_epochs": rounded(self.main_epochs),
            "main_seconds_estimated": rounded(self.main_seconds),
            "share_of_main_training": rounded(self.share, 4),
            "target": self.target,
        }


@dataclass
class ProbeOutcome:
    """What a probing run produced.

    Attributes:
        curves: Modality -> its probe's curve.
        num_classes: Width of the probes' heads: classes (labels, outputs for the other tasks).
        cost: Seconds spent, and the main training's time once measured.
        epoch_batches: Train batches in one probe epoch.
        val_source: ``"val_dataloader"`` or the held-out share of the train set.
        val_samples: Validation samples each score was computed on (all processes together).
        max_epochs: The probes' hard cap, in probe epochs.
        folded: Modality -> frames its encoder folds into the batch (only modalities that fold).
        task: ``"multiclass"``, ``"multilabel"`` or ``"regression"``.
        metric: The metric that scored the probes (higher is better; ``neg_mse`` is negated).
        chance: Score of an uninformed predictor (None: 1 / ``num_classes``).
        top: Best possible score.
    """

    curves: dict[str, ProbeCurve]
    num_classes: int
    cost: ProbeCost
    epoch_batches: int
    val_source: str
    val_samples: int = 0
    max_epochs: float = math.inf
    folded: dict[str, int] = field(default_factory=dict)
    task: str = "multiclass"
    metric: str = "accuracy"
    chance: float | None = None
    top: float = 1.0

    @property
    def chance_level(self) -> float:
        """Score of an uninformed predictor: the measured one, or 1 / ``num_classes``."""
        return self.chance if self.chance is not None else 1.0 / self.num_classes

    @property
    def scores(self) -> dict[str, float]:
        """Modality -> best validation score."""
        return {m: c.best_score for m, c in self.curves.items()}

    @property
    def seconds(self) -> float:
        """Wall time of the probes, set-up and validation included."""
        return self.cost.seconds

    def doubts(self) -> list[str]:
        """Why the ranking may not be what converged unimodal training would give; empty when it is clear.

        Four cases: the best probe is barely above chance (the probes learned next to nothing); the
        best two scores are within one standard error of their difference on ``val_samples``
        (binomial approximation: a tie decided by validation noise); a trailing probe stopped by the
        hard cap while still near chance (a slow starter or an uninformative modality: it cannot be
        told), or while still climbing fast enough to reach the leader within as many epochs again.
        """
        ranked = sorted(self.scores.items(), key=lambda item: (-item[1], item[0]))
        (first, best), (second, runner_up) = ranked[0], ranked[1]
        doubts = []
        if not clearly_above_chance(best, self.chance_level, self.top):
            doubts.append(
                f"the best probe ({first}: {best:.3f}) is barely above chance ({self.chance_level:.3f}): the probes "
                "learned next to nothing and the ranking is a guess"
            )
        noise = standard_error(best, runner_up, self.val_samples)
        if best - runner_up <= noise:
            doubts.append(
                f"{first} ({best:.3f}) leads {second} ({runner_up:.3f}) by {best - runner_up:.3f}, within one "
                f"standard error ({noise:.3f}) on {self.val_samples} validation samples: a tie decided by noise"
            )
        doubts.extend(self._capped_while_climbing())
        return doubts

    def first_pass_progress(self) -> dict[str, float]:
        """Modality -> how much of its way from chance to its best score its probe had gone at the first pass.

        1 for a modality learned within the first validation pass (or never above chance), near 0
        for one still at chance then: a measure of how fast each modality is learned.
        """
        chance = self.chance_level
        progress = {}
        for modality, curve in self.curves.items():
            span = curve.best_score - chance
            progress[modality] = (curve.scores[0] - chance) / span if curve.scores and span > 0 else 1.0
        return progress

    def slow_starter(self, modality: str) -> bool:
        """Whether ``modality`` is learned clearly slower than the fastest other one.

        True when its probe's ``first_pass_progress`` is more than ``SLOW_START_MARGIN`` below the
        fastest other probe's: joint training then fits the others first, the under-optimization PDMP
        corrects. A dominant modality learned as fast as the others leads joint training already.
        """
        progress = self.first_pass_progress()
        others = [value for other, value in progress.items() if other != modality]
        return bool(others) and progress[modality] < max(others) - SLOW_START_MARGIN

    def _capped_while_climbing(self) -> list[str]:
        doubts = []
        for modality, curve in sorted(self.curves.items()):
            if curve.stopped != CAP:
                continue
            leader, lead = max(
                ((m, c.best_score) for m, c in self.curves.items() if m != modality), key=lambda item: item[1]
            )
            gap, slope = lead - curve.best_score, curve.slope(SLOPE_WINDOW)
            if gap <= 0:
                continue
            if not clearly_above_chance(curve.best_score, self.chance_level, self.top):
                doubts.append(
                    f"the probe of '{modality}' reached the cap of {self.max_epochs:g} probe epochs still near chance "
                    f"({curve.best_score:.3f}), {gap:.3f} behind the leader '{leader}' ({lead:.3f}): a slow starter "
                    "cannot be told from an uninformative modality, and longer probes could change the ranking"
                )
            elif slope > 0 and gap <= slope * self.max_epochs:
                doubts.append(
                    f"the probe of '{modality}' reached the cap of {self.max_epochs:g} probe epochs while still "
                    f"improving ({slope:+.3f} per epoch over its last passes), {gap:.3f} behind the leader "
                    f"'{leader}' ({lead:.3f}): longer probes could change the ranking"
                )
        return doubts


#: Validation passes over which a probe's recent slope is measured.
SLOPE_WINDOW = 3
#: How far (in progress from chance to best, at the first pass) a modality must trail the fastest other
#: one to count as a slow starter. Measured on the benchmark tasks: slow dominant modalities trail by
#: 0.35 to 0.8, the UCI views' dominant ones by at most 0.07.
SLOW_START_MARGIN = 0.2


def clearly_above_chance(score: float, chance: float, top: float = 1.0) -> bool:
    """Whether ``score`` is at least 10% of the way from ``chance`` (1/C for accuracy) to ``top``.

    Examples:
        >>> clearly_above_chance(0.3, 1 / 4), clearly_above_chance(0.35, 1 / 4)
        (False, True)
    """
    return score >= chance + 0.1 * (top - chance)


def standard_error(first: float, second: float | None, samples: int) -> float:
    """Standard error of an accuracy, or of the difference of two, measured on ``samples`` samples (binomial)."""
    variance = sum(max(score * (1 - score), 0.0) for score in (first, second) if score is not None)
    return math.sqrt(variance / max(samples, 1))


def rank_by_score(scores: Mapping[str, float]) -> list[str]:
    """Modalities best first; ties broken by name, so the ranking is deterministic.

    Examples:
        >>> rank_by_score({"b": 0.7, "a": 0.7, "c": 0.9})
        ['c', 'a', 'b']
    """
    return sorted(scores, key=lambda m: (-scores[m], m))
