"""PDMP: rank the modalities by unimodal probes, then let the performance-dominant one lead."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from pdmp_lightning.batch import BatchKey, check_batch_key
from pdmp_lightning.callbacks.base import ModalityModulationCallback
from pdmp_lightning.errors import ProbeRankingWarning, check_int, config_error, is_number
from pdmp_lightning.modality import ModalitySpecInput
from pdmp_lightning.modulation.coefficients import (
    COEFFICIENT_FORMULAS,
    CoefficientFormula,
    check_gamma,
    priority_coefficients,
)
from pdmp_lightning.modulation.mechanisms import Mechanism
from pdmp_lightning.probing.report import REPORT_FILENAME, format_table, probe_report, write_json_atomically
from pdmp_lightning.probing.runner import (
    PROBE_METRICS,
    ProbeMetric,
    ProbeOutcome,
    ProbeRunner,
    ProbeSettings,
    main_train_batches,
    rank_by_score,
)
from pdmp_lightning.rng import preserved_rng_state
from pdmp_lightning.types import (
    Fraction,
    NonNegativeFloat,
    NonNegativeInt,
    OpenUnitInterval,
    PositiveFloat,
    PositiveInt,
)

#: Warm-up as a share of the training, and in epochs when the length is unknown (the paper: 5 of 100).
WARMUP_SHARE = 0.05
PAPER_WARMUP_EPOCHS = 5


class PDMPCallback(ModalityModulationCallback):
    """Performance-Dominant Modality Prioritization (arXiv 2604.05773) for any LightningModule.

    At the start of training, one unimodal probe per modality (a copy of that modality's encoder with
    a fresh linear head) is trained on that modality alone and scored on validation data; the best
    modality is the performance-dominant one. During the modulation window its encoder's learning
    signal is multiplied by ``gamma_p`` and every other encoder's by ``gamma_r``. PDMP *boosts* the
    dominant modality, where OGM-GE and similar balancing methods *suppress* the currently stronger
    one. Parameters in no modality (the fusion head, ...) are never touched.

    Args:
        modalities: Modality name -> dotted submodule path(s) on the LightningModule
            (``{"audio": "audio_encoder", "visual": "backbones.visual"}``), or ``"re:<regex>"``
            patterns matched with ``re.search`` against ``named_parameters()`` names.
        gamma_p: Gamma of the performance-dominant modality (the paper: around 10-15).
        gamma_r: Gamma of every other modality (<= 1 restrains them).
        ranking: Modalities best first, to skip the probes (e.g. ``["visual", "audio"]``).
        inputs: Modality -> batch key (dict batches) or index (tuple batches) of its input;
            default: the modality's name.
        target: Batch key or index of the integer class labels.
        start_epoch: First modulated epoch; the epochs before it are warm-up. None: 5% of the main
            training's epochs, rounded half up (the paper's 5 warm-up epochs of 100; 1 of 15), resolved
            when training starts.
        end_epoch: First epoch after the modulation window (exclusive); None: until the end.
        coefficient_formula: ``"constant"`` (k = gamma), ``"offset"`` (k = 1 + gamma) or
            ``"normalized"`` (k_m = M * gamma_m / sum of gammas).
        mechanism: How the coefficients act: ``"auto"`` scales the update for Adam-family
            optimizers (where a gradient scale cancels out), ``p.grad`` under FSDP, and the gradient at
            each encoder's output otherwise; or force ``"activation"``, ``"parameter"``, ``"grad"``
            or ``"update"``.
        probe_metric: ``"accuracy"`` or ``"macro_f1"`` on the validation data.
        probe_max_epochs: Hard cap on probe epochs.
        probe_budget: Share of the main training's train batches the probes may train on in all:
            each probe epoch uses at most ``probe_budget * T / probe_max_epochs`` of the main
            training's T batches (at least one). Long trainings get full-data probe epochs, short ones
            small probes. None: no cap (every probe epoch uses ``probe_data_fraction`` of the data).
        probe_min_epochs: Epochs every probe trains before its stopping rule applies (None: 3, or
            ``probe_max_epochs`` if smaller).
        probe_patience: A probe stops after this many epochs without improvement.
        probe_min_delta: Smallest score increase that counts as improvement.
        probe_data_fraction: Fraction of the train batches in each probe epoch (0, 1], before the
            ``probe_budget`` cap.
        probe_val_fraction: Share of the train set held out for scoring when there is no
            validation dataloader.
        probe_lr: Adam learning rate of the probes.
        num_classes: Number of classes; None takes ``pl_module.num_classes`` (or its hparams),
            else scans the labels.
        probe_seed: Seed of the held-out split.
        log_every_n_steps: Interval of the coefficient and gradient-norm logs (None: the Trainer's).
        report_filename: Name of the JSON probe report written into the log directory.

    Example:
        >>> from lightning.pytorch import Trainer
        >>> callback = PDMPCallback({"audio": "audio_encoder", "visual": "visual_encoder"}, ranking=["visual", "audio"])
        >>> callback.dominant, callback.coefficients
        ('visual', {'visual': 10.0, 'audio': 1.0})
        >>> trainer = Trainer(callbacks=[callback], logger=False, enable_checkpointing=False)
    """

    def __init__(
        self,
        modalities: Mapping[str, ModalitySpecInput],
        gamma_p: PositiveFloat = 10.0,
        gamma_r: PositiveFloat = 1.0,
        ranking: Sequence[str] | None = None,
        inputs: Mapping[str, BatchKey] | None = None,
        target: BatchKey = "label",
        start_epoch: NonNegativeInt | None = None,
        end_epoch: PositiveInt | None = None,
        coefficient_formula: CoefficientFormula = "constant",
        mechanism: Mechanism = "auto",
        probe_metric: ProbeMetric = "accuracy",
        probe_max_epochs: PositiveInt = 10,
        probe_budget: PositiveFloat | None = 0.15,
        probe_min_epochs: PositiveInt | None = None,
        probe_patience: PositiveInt = 3,
        probe_min_delta: NonNegativeFloat = 0.0,
        probe_data_fraction: Fraction = 1.0,
        probe_val_fraction: OpenUnitInterval = 0.2,
        probe_lr: PositiveFloat = 3e-3,
        num_classes: PositiveInt | None = None,
        probe_seed: int = 0,
        log_every_n_steps: NonNegativeInt | None = None,
        report_filename: str = REPORT_FILENAME,
    ) -> None:
        super().__init__(
            modalities,
            start_epoch=0 if start_epoch is None else start_epoch,
            end_epoch=end_epoch,
            mechanism=mechanism,
            log_every_n_steps=log_every_n_steps,
            log_prefix="pdmp",
        )
        self.gamma_p = check_gamma("gamma_p", gamma_p)
        self.gamma_r = check_gamma("gamma_r", gamma_r)
        if coefficient_formula not in COEFFICIENT_FORMULAS:
            raise config_error("coefficient_formula", coefficient_formula, f"one of {list(COEFFICIENT_FORMULAS)}")
        self.coefficient_formula: CoefficientFormula = coefficient_formula
        self.inputs = self._check_inputs(inputs)
        self.target = check_batch_key("target", target)
        self.probe_settings = _probe_settings(
            probe_metric,
            probe_max_epochs,
            probe_budget,
            probe_min_epochs,
            probe_patience,
            probe_min_delta,
            probe_data_fraction,
            probe_val_fraction,
            probe_lr,
            num_classes,
            probe_seed,
        )
        if not isinstance(report_filename, str) or not report_filename or Path(report_filename).name != report_filename:
            raise config_error("report_filename", report_filename, "a plain file name (written into the log directory)")
        self.report_filename = report_filename
        self._given_ranking = self._check_ranking(ranking) if ranking is not None else None
        self._ranking: list[str] | None = self._given_ranking
        self._probe_scores: dict[str, float] | None = None
        self._restored: dict[str, Any] | None = None
        self.probe_outcome: ProbeOutcome | None = None
        self.report_path: Path | None = None
        self._warmup_from_training = start_epoch is None
        if self._ranking is not None:
            self._set_coefficients()

    # --- public results -------------------------------------------------------------------------

    @property
    def ranking(self) -> list[str] | None:
        """Modalities best first (None until probed or given)."""
        return list(self._ranking) if self._ranking is not None else None

    @property
    def dominant(self) -> str | None:
        """The performance-dominant modality (None until known)."""
        return self._ranking[0] if self._ranking else None

    @property
    def probe_scores(self) -> dict[str, float] | None:
        """Modality -> best probe validation score; None when the ranking was given."""
        return dict(self._probe_scores) if self._probe_scores is not None else None

    @property
    def coefficients(self) -> dict[str, float]:
        """Modality -> multiplier applied during the modulation window (empty until the ranking is known)."""
        return dict(self.multipliers)

    # --- Lightning hooks ------------------------------------------------------------------------

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Resolved first: an incompatible mechanism or window fails before any probe runs or report is written.
        mechanism = self._resolve_mechanism(trainer)
        if self._warmup_from_training:
            self.start_epoch = self._warmup_epochs(trainer)
        outcome = None
        if self._given_ranking is not None:
            # An explicit ranking wins over anything a checkpoint holds.
            self._ranking, self._probe_scores, self._restored = self._given_ranking, None, None
        elif self._restore():
            rank_zero_info(f"PDMPCallback: ranking {self._ranking} restored from the checkpoint; probes skipped.")
        elif self._ranking is not None:
            rank_zero_info(
                f"PDMPCallback: keeping the ranking {self._ranking} found in an earlier fit; probes skipped."
            )
        else:
            outcome = self._probe(trainer, pl_module)
        self._set_coefficients()
        self._publish(trainer, outcome)
        self._install_modulator(mechanism, pl_module)

    def _warmup_epochs(self, trainer: pl.Trainer) -> int:
        """5% of the main training's epochs, rounded half up: the paper's 5 warm-up epochs of 100."""
        total, batches = main_train_batches(trainer), trainer.num_training_batches
        if total is None or not (math.isfinite(batches) and batches > 0):
            rank_zero_info(
                f"PDMPCallback: the training has no known length; warm-up of {PAPER_WARMUP_EPOCHS} epochs "
                "(the paper's). Set `start_epoch` to choose another."
            )
            return PAPER_WARMUP_EPOCHS
        epochs = math.ceil(total / batches)
        warmup = math.floor(WARMUP_SHARE * epochs + 0.5)
        if self.end_epoch is not None and warmup >= self.end_epoch:
            raise config_error(
                "start_epoch",
                None,
                f"a warm-up shorter than end_epoch ({self.end_epoch})",
                f"{WARMUP_SHARE:.0%} of this training's {epochs} epochs is {warmup}; set `start_epoch` explicitly.",
            )
        return warmup

    def state_dict(self) -> dict[str, Any]:
        return {
            "ranking": self.ranking,
            "probe_scores": self.probe_scores,
            "coefficients": self.coefficients,
            "fingerprint": self.fingerprint,
            "modalities": {m: s.as_strings() for m, s in self._specs.items()},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Applied in on_train_start: the first hook where every strategy has restored it.
        self._restored = dict(state_dict)

    @property
    def fingerprint(self) -> str:
        """A hash of the modality set and its parameter selection; a checkpoint with another one is not reused."""
        payload = json.dumps({m: s.as_strings() for m, s in sorted(self._specs.items())}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    # --- steps ----------------------------------------------------------------------------------

    def _probe(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> ProbeOutcome:
        runner = ProbeRunner(self.probe_settings, self.inputs, self.target)
        with preserved_rng_state():
            outcome = runner.run(trainer, pl_module, self.groups)
        # Scores are already identical across ranks; deciding once on rank 0 makes it certain.
        self._ranking = trainer.strategy.broadcast(rank_by_score(outcome.scores), src=0)
        self._probe_scores = outcome.scores
        self.probe_outcome = outcome
        for doubt in outcome.doubts():
            rank_zero_warn(
                f"PDMPCallback: the probes' ranking {self._ranking} is uncertain: {doubt}. Hint: raise `probe_budget` "
                "(the probes train on that share of the main training) or pass `ranking` if you know the dominant "
                "modality.",
                category=ProbeRankingWarning,
            )
        return outcome

    def _restore(self) -> bool:
        state, self._restored = self._restored, None
        if not state or not state.get("ranking"):
            return False
        if state.get("fingerprint") != self.fingerprint or sorted(state["ranking"]) != sorted(self._specs):
            mine = {m: s.as_strings() for m, s in self._specs.items()}
            rank_zero_warn(
                f"PDMPCallback: the checkpoint's modalities {state.get('modalities')} differ from this callback's "
                f"{mine}; its ranking is ignored and the probes run again."
            )
            return False
        self._ranking = list(state["ranking"])
        self._probe_scores = state.get("probe_scores")
        return True

    def _set_coefficients(self) -> None:
        assert self._ranking is not None
        coefficients = priority_coefficients(self._ranking, self.gamma_p, self.gamma_r, self.coefficient_formula)
        self.multipliers.clear()
        self.multipliers.update(coefficients)

    def _publish(self, trainer: pl.Trainer, outcome: ProbeOutcome | None) -> None:
        assert self._ranking is not None
        metric = self.probe_settings.metric
        table = format_table(self._ranking, self.multipliers, self._probe_scores, metric, outcome)
        window = f"epochs {self.start_epoch}..{'end' if self.end_epoch is None else self.end_epoch - 1}"
        rank_zero_info(f"PDMPCallback: dominant modality '{self.dominant}', modulating {window}\n{table}")
        log_dir = trainer.log_dir  # collective under DDP: every rank must ask
        if outcome is not None:
            self._log_curves(trainer, outcome)
        if log_dir is None or not trainer.is_global_zero:
            return
        self.report_path = Path(log_dir) / self.report_filename
        config = {
            "gamma_p": self.gamma_p,
            "gamma_r": self.gamma_r,
            "coefficient_formula": self.coefficient_formula,
            "start_epoch": self.start_epoch,
            "end_epoch": self.end_epoch,
            "mechanism": self.mechanism,
            "modalities": {m: s.as_strings() for m, s in self._specs.items()},
            "probe": vars(self.probe_settings),
            "fingerprint": self.fingerprint,
        }
        report = probe_report(outcome, self._ranking, self.multipliers, metric, config)
        if outcome is None and self._probe_scores is not None:
            report.update(source="checkpoint", scores=self._probe_scores)
        write_json_atomically(self.report_path, report)

    def _log_curves(self, trainer: pl.Trainer, outcome: ProbeOutcome) -> None:
        if not trainer.is_global_zero:
            return
        metric = self.probe_settings.metric
        for logger in trainer.loggers:
            for modality, curve in outcome.curves.items():
                for epoch, score in enumerate(curve.scores):
                    logger.log_metrics({f"pdmp/probe_{metric}/{modality}": score}, step=epoch)
            logger.log_metrics({f"pdmp/probe_best_{metric}/{m}": s for m, s in outcome.scores.items()}, step=0)

    # --- argument checks ------------------------------------------------------------------------

    def _check_ranking(self, ranking: Sequence[str]) -> list[str]:
        allowed = f"each of {self.modality_names} exactly once, best first"
        if isinstance(ranking, str) or not isinstance(ranking, Sequence):
            raise config_error("ranking", ranking, allowed)
        unknown = [m for m in ranking if m not in self._specs]
        if unknown:
            raise config_error("ranking", list(ranking), allowed, f"unknown modality names {unknown}.")
        if sorted(ranking) != sorted(self._specs):
            raise config_error("ranking", list(ranking), allowed, "a name is repeated or missing.")
        return list(ranking)

    def _check_inputs(self, inputs: Mapping[str, BatchKey] | None) -> dict[str, BatchKey]:
        if inputs is None:
            return {m: m for m in self._specs}
        if not isinstance(inputs, Mapping):
            raise config_error("inputs", inputs, "a mapping of modality name -> batch key or index")
        unknown = [m for m in inputs if m not in self._specs]
        if unknown:
            raise config_error(
                "inputs", dict(inputs), f"keys among the modalities {self.modality_names}", f"unknown {unknown}."
            )
        checked = {m: check_batch_key(f"inputs[{m!r}]", key) for m, key in inputs.items()}
        return {m: checked.get(m, m) for m in self._specs}


def _probe_settings(
    metric: str,
    max_epochs: int,
    budget: float | None,
    min_epochs: int | None,
    patience: int,
    min_delta: float,
    data_fraction: float,
    val_fraction: float,
    lr: float,
    num_classes: int | None,
    seed: int,
) -> ProbeSettings:
    if metric not in PROBE_METRICS:
        raise config_error("probe_metric", metric, f"one of {list(PROBE_METRICS)}")
    check_int("probe_max_epochs", max_epochs, 1)
    check_int("probe_patience", patience, 1)
    if min_epochs is None:
        min_epochs = min(3, max_epochs)
    check_int("probe_min_epochs", min_epochs, 1)
    if min_epochs > max_epochs:
        raise config_error("probe_min_epochs", min_epochs, f"at most probe_max_epochs ({max_epochs})")
    for name, value, low_open, high in (
        ("probe_data_fraction", data_fraction, 0.0, 1.0),
        ("probe_val_fraction", val_fraction, 0.0, 0.9),
    ):
        if not is_number(value, above=low_open, at_most=high):
            raise config_error(name, value, f"a number in ({low_open:g}, {high:g}]")
    if not is_number(min_delta, at_least=0):
        raise config_error("probe_min_delta", min_delta, "a finite number >= 0")
    if not is_number(lr, above=0):
        raise config_error("probe_lr", lr, "a finite number > 0")
    if budget is not None and not is_number(budget, above=0):
        raise config_error(
            "probe_budget",
            budget,
            "a finite number > 0 (share of the main training's train batches) or None",
            "0.15 (the default) lets the probes train on at most 15% of what the main training does.",
        )
    check_int("num_classes", num_classes, 2, optional=True)
    check_int("probe_seed", seed)
    return ProbeSettings(
        max_epochs=max_epochs,
        budget=None if budget is None else float(budget),
        min_epochs=min_epochs,
        patience=patience,
        min_delta=float(min_delta),
        data_fraction=float(data_fraction),
        val_fraction=float(val_fraction),
        lr=float(lr),
        metric=metric,  # type: ignore[arg-type]
        num_classes=num_classes,
        seed=seed,
    )
