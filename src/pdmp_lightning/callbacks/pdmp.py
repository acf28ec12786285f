"""PDMP: rank the modalities by unimodal probes, then let the performance-dominant one lead."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.optim import Optimizer

from pdmp_lightning.batch import BatchKey, check_batch_key
from pdmp_lightning.callbacks.base import ModalityModulationCallback
from pdmp_lightning.errors import ProbeRankingWarning, config_error
from pdmp_lightning.modality import ModalitySpecInput
from pdmp_lightning.modulation.adaptation import ADAPTATIONS, Adaptation, Boost, build_boost
from pdmp_lightning.modulation.coefficients import (
    COEFFICIENT_FORMULAS,
    CoefficientFormula,
    check_gamma,
    priority_coefficients,
)
from pdmp_lightning.modulation.mechanisms import Mechanism
from pdmp_lightning.probing.outcome import ProbeOutcome, rank_by_score
from pdmp_lightning.probing.probe import is_sharded
from pdmp_lightning.probing.report import (
    REPORT_FILENAME,
    cost_message,
    format_table,
    probe_report,
    write_json_atomically,
)
from pdmp_lightning.probing.runner import ProbeRunner, main_train_batches
from pdmp_lightning.probing.settings import ProbeSettings
from pdmp_lightning.rng import preserved_rng_state
from pdmp_lightning.types import NonNegativeInt, PositiveFloat, PositiveInt

#: Warm-up as a share of the training, and in epochs when the length is unknown (the paper: 5 of 100).
WARMUP_SHARE = 0.05
PAPER_WARMUP_EPOCHS = 5


class PDMPCallback(ModalityModulationCallback):
    """Performance-Dominant Modality Prioritization (arXiv 2604.05773) for any LightningModule.

    At the start of training, one unimodal probe per modality (a copy of that modality's encoder with
    a fresh linear head) is trained on that modality alone and scored on validation data, until it
    plateaus or the ranking is settled; the best modality is the performance-dominant one. During the
    modulation window its encoder's learning signal is multiplied by ``gamma_p`` and every other
    encoder's by ``gamma_r``. PDMP *boosts* the dominant modality, where OGM-GE and similar balancing
    methods *suppress* the currently stronger one. Parameters in no modality (the fusion head, ...) are never touched.

    By default the boost adapts (``adaptation="hypergradient"``): it starts at ``gamma_p`` and backs
    off, down to what the other modalities get, while the dominant encoder's steps overshoot, which
    they do when the base learning rate is already well tuned. ``adaptation="none"`` keeps the
    paper's constant coefficients.

    Args:
        modalities: Modality name -> dotted submodule path(s) on the LightningModule
            (``{"audio": "audio_encoder", "visual": "backbones.visual"}``), or ``"re:<regex>"``
            patterns matched with ``re.search`` against ``named_parameters()`` names.
        gamma_p: Gamma of the performance-dominant modality (the paper: around 10-15); with an
            adaptive boost, the largest multiplier it may reach, and its first.
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
        adaptation: How the dominant modality's multiplier moves during training:
            ``"hypergradient"`` (between the others' multiplier, at least 1, and ``gamma_p``, from
            the cosine between the dominant encoder's gradient and its previous update: a copy of
            that encoder's parameters, or of an evenly spaced sample of about 8,192 of them), ``"backoff"``
            (halved when the training loss rises) or ``"none"`` (the paper's constant ``gamma_p``).
            Both adaptive modes do not boost a dominant modality the probes found learned as fast
            as the others.
        mechanism: How the coefficients act: ``"auto"`` scales the update for Adam-family
            optimizers (where a gradient scale cancels out), ``p.grad`` under FSDP, and the gradient at
            each encoder's output otherwise; or force ``"activation"``, ``"parameter"``, ``"grad"``
            or ``"update"``.
        probes: How the unimodal probes train, stop and are scored (``ProbeSettings``; a dict
            of its fields is accepted too). None: the defaults. The probes never depend on the main
            training's length: each trains until it plateaus or the ranking is settled, up to
            ``probes.max_epochs``.
        log_every_n_steps: Interval of the coefficient and gradient-norm logs (None: the Trainer's).
        report_path: Where to write the JSON probe report. None: ``pdmp_probe_report.json`` in the
            first logger's log directory, and nowhere when the Trainer has no logger.

    Examples:
        >>> from lightning.pytorch import Trainer
        >>> modalities = {"audio": "audio_encoder", "visual": "visual_encoder"}
        >>> callback = PDMPCallback(modalities, ranking=["visual", "audio"])
        >>> callback.dominant, callback.coefficients
        ('visual', {'visual': 10.0, 'audio': 1.0})
        >>> trainer = Trainer(callbacks=[callback], logger=False)
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
        adaptation: Adaptation = "hypergradient",
        mechanism: Mechanism = "auto",
        probes: ProbeSettings | None = None,
        log_every_n_steps: NonNegativeInt | None = None,
        report_path: str | None = None,
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
        if adaptation not in ADAPTATIONS:
            raise config_error(
                "adaptation",
                adaptation,
                f"one of {list(ADAPTATIONS)}",
                "'none' keeps the paper's constant gamma_p; 'hypergradient' (the default) lets it back off.",
            )
        self.adaptation: Adaptation = adaptation
        #: The dominant modality's adaptive multiplier (None with ``adaptation="none"`` or until the ranking is known).
        self.boost: Boost | None = None
        self.inputs = self._check_inputs(inputs)
        self.target = check_batch_key("target", target)
        self.probes = _probe_settings(probes)
        if report_path is not None and (not isinstance(report_path, str | os.PathLike) or not str(report_path)):
            raise config_error(
                "report_path", report_path, "None (the logger's directory) or a file path for the JSON probe report"
            )
        self._report_path_given = None if report_path is None else Path(report_path)
        self.report_path: Path | None = self._report_path_given
        self._given_ranking = self._check_ranking(ranking) if ranking is not None else None
        self._probe_templates: dict[str, torch.nn.Module] = {}
        self._ranking: list[str] | None = self._given_ranking
        self._probe_scores: dict[str, float] | None = None
        self._restored: dict[str, Any] | None = None
        self.probe_outcome: ProbeOutcome | None = None
        self._epoch_timer: _EpochTimer | None = None
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
    def skip_probes_arguments(self) -> dict[str, Any]:
        """The arguments that make a later run train like this one without probing: ``{"ranking": [...]}``.

        ``gamma_p`` is added when the probes showed that no boost is needed (the dominant modality is
        not a slow starter, see ``ProbeOutcome.slow_starter``), which a given ranking cannot tell.
        """
        arguments: dict[str, Any] = {"ranking": self.ranking}
        boost = self.boost
        if boost is not None and not boost.adapts and self.probe_outcome is not None:
            arguments["gamma_p"] = boost.ceiling
        return arguments

    def _skip_hint(self) -> str:
        return ", ".join(f"{name}={value!r}" for name, value in self.skip_probes_arguments.items())

    # --- Lightning hooks ------------------------------------------------------------------------

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._probe_templates = {}
        if stage != "fit" or self._given_ranking is not None or not self._is_sharded(trainer):
            return
        if isinstance(trainer.strategy, FSDPStrategy):
            raise config_error(
                "Trainer(strategy=...)",
                "FSDPStrategy, with probes",
                "ModelParallelStrategy (FSDP2, fully_shard in configure_model) or DDP for the probes, or `ranking`",
                "FSDP1 flattens the encoders' parameters, and copying them for the probes has not been built or "
                "tested (it needs a GPU); pass ranking=[...] from a DDP or single-device probe run.",
            )
        # FSDP2 forbids deep copies of sharded modules: keep an unsharded copy of each encoder now, before
        # configure_model shards it; the probes load the gathered full weights into it.
        for spec in self._specs.values():
            for path in spec.paths:
                try:
                    module = pl_module.get_submodule(path)
                except AttributeError:
                    continue  # created in configure_model: copy_encoder says what to do if it gets sharded
                if not is_sharded(module):
                    self._probe_templates[path] = copy.deepcopy(module)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Resolved first: an incompatible mechanism or window fails before any probe runs or report is written.
        mechanism = self._resolve_mechanism(trainer)
        self.mechanism_in_use = mechanism  # for the report, written before the modulator is installed
        if self._warmup_from_training:
            self.start_epoch = self._warmup_epochs(trainer)
        outcome = None
        restored_boost = (self._restored or {}).get("boost")
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
        self._restore_boost(restored_boost)
        self._publish(trainer, outcome)
        self._install_modulator(mechanism, pl_module)
        self._warn_if_the_window_never_opens(trainer)
        # The probes' cost is compared with the main training's measured epoch time once it is known.
        self._epoch_timer = _EpochTimer(trainer.num_training_batches) if outcome is not None else None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        if self._epoch_timer is not None:
            self._epoch_timer.start()

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        super().on_before_backward(trainer, pl_module, loss)
        if self.boost is not None and self.is_modulating:
            self.boost.observe_loss(loss)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._epoch_timer is not None:
            self._epoch_timer.batches += 1

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._report_cost(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._report_cost(trainer)  # a training shorter than one epoch
        super().on_train_end(trainer, pl_module)

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
            "boost": None if self.boost is None else {**self.boost.state_dict(), "dominant": self.dominant},
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
        runner = ProbeRunner(self.probes, self.inputs, self.target)
        with preserved_rng_state():
            outcome = runner.run(trainer, pl_module, self.groups, self._probe_templates)
        self._probe_templates = {}  # the probes are built: the copies are not needed any more
        # Scores are already identical across ranks; deciding once on rank 0 makes it certain.
        self._ranking = trainer.strategy.broadcast(rank_by_score(outcome.scores), src=0)
        self._probe_scores = outcome.scores
        self.probe_outcome = outcome
        total, per_epoch = main_train_batches(trainer), trainer.num_training_batches
        if total is not None and math.isfinite(per_epoch) and per_epoch > 0:
            outcome.cost.main_epochs = total / per_epoch
        for doubt in outcome.doubts():
            rank_zero_warn(
                f"PDMPCallback: the probes' ranking {self._ranking} ({outcome.task}, by {outcome.metric}) is "
                f"uncertain: {doubt}. Hint: raise "
                f"`probes.max_epochs` (now {self.probes.max_epochs:g}) or `probes.lr` (now {self.probes.lr:g}), "
                "or pass `ranking` if you know the dominant modality.",
                category=ProbeRankingWarning,
            )
        return outcome

    def _report_cost(self, trainer: pl.Trainer) -> None:
        timer, outcome = self._epoch_timer, self.probe_outcome
        if timer is None or outcome is None or timer.started is None or timer.batches == 0:
            return
        self._epoch_timer = None
        outcome.cost.main_epoch_seconds = timer.epoch_seconds()
        if outcome.cost.main_epochs is None or self._ranking is None:
            return
        rank_zero_info(f"PDMPCallback: {cost_message(outcome, self._skip_hint())}")
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics({"pdmp/probe_cost_share": float(outcome.cost.share or 0.0)}, step=0)
            self._write_report(outcome)

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
        self._coefficients.clear()
        self._coefficients.update(coefficients)
        dominant, others = self._ranking[0], [k for m, k in coefficients.items() if m != self._ranking[0]]
        # The boost never falls below plain joint training, nor below what the other modalities get.
        floor = max([1.0, *others])
        ceiling = coefficients[dominant]
        outcome = self.probe_outcome
        gated = self.adaptation != "none" and self.coefficient_formula == "constant"
        if outcome is not None and gated and not outcome.slow_starter(dominant):
            ceiling = min(ceiling, floor)  # joint training already follows the fastest modality
        self.boost = build_boost(self.adaptation, ceiling, floor) if coefficients[dominant] > floor else None
        if self.boost is not None:
            self._coefficients[dominant] = self.boost.value

    def _progress_text(self) -> str:
        outcome = self.probe_outcome
        if outcome is None:
            return "no probes"
        progress = outcome.first_pass_progress()
        return "share of the way to its best at the first pass: " + ", ".join(
            f"{m} {progress[m]:.2f}" for m in self._ranking or progress
        )

    def _restore_boost(self, state: Mapping[str, Any] | None) -> None:
        """Resumes the adaptive boost where the checkpoint left it (same rule, same dominant modality)."""
        dominant = self.dominant
        if self.boost is None or dominant is None or not state:
            return
        if state.get("name") != self.boost.name or state.get("dominant") != dominant:
            return
        self.boost.load_state_dict(dict(state))  # the ceiling too: the probes that set it did not run again
        self._coefficients[dominant] = self.boost.value

    def _activate(self, trainer: pl.Trainer) -> None:
        super()._activate(trainer)
        if self.boost is not None:
            self.boost.reset()

    def _before_step_modulation(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer) -> None:
        boost, dominant = self.boost, self.dominant
        if boost is None or not boost.adapts or dominant is None or not self.is_modulating or self._modulator is None:
            return
        parameters = self._modulator.parameters_in(optimizer)[dominant]
        if not parameters:
            return
        reduce = None
        if trainer.world_size > 1:

            def reduce(tensor: torch.Tensor, op: str) -> torch.Tensor:
                return trainer.strategy.reduce(tensor, reduce_op=op)

        if boost.step(parameters, reduce):
            self._coefficients[dominant] = boost.value

    def _method_metrics(self) -> dict[str, float | torch.Tensor]:
        if self.boost is None or self.boost.signal is None:
            return {}
        return {f"{self.log_prefix}/{self.boost.name}_signal": self.boost.signal}

    def _publish(self, trainer: pl.Trainer, outcome: ProbeOutcome | None) -> None:
        assert self._ranking is not None
        metric = self._metric_name(outcome)
        table = format_table(self._ranking, self._coefficients, self._probe_scores, metric, outcome, self._skip_hint())
        window = f"epochs {self.start_epoch}..{'end' if self.end_epoch is None else self.end_epoch - 1}"
        boost = self.boost
        if boost is None:
            adapts = ""
        elif boost.adapts:
            adapts = f"; its multiplier adapts ({boost.name}) between {boost.floor:g} and {boost.ceiling:g}"
            if self.probe_outcome is not None:
                adapts += f" (a slow starter: {self._progress_text()})"
        else:
            adapts = (
                f"; no boost: its probe learned as fast as the others ({self._progress_text()}), so joint "
                "training does not leave it behind (adaptation='none' keeps the paper's constant gamma_p)"
            )
        rank_zero_info(f"PDMPCallback: dominant modality '{self.dominant}', modulating {window}{adapts}\n{table}")
        self.report_path = self._report_path_given
        if self.report_path is None and trainer.loggers:
            log_dir = trainer.log_dir  # collective under DDP: every rank must ask
            self.report_path = None if log_dir is None else Path(log_dir) / REPORT_FILENAME
        if outcome is not None:
            self._log_curves(trainer, outcome)
        if trainer.is_global_zero:
            self._write_report(outcome)

    def _metric_name(self, outcome: ProbeOutcome | None) -> str:
        """The metric that ranked the modalities: the probes' resolved one, else the setting's."""
        if outcome is not None:
            return outcome.metric
        return self.probes.metric_name if self.probes.metric is not None else "accuracy"

    def _write_report(self, outcome: ProbeOutcome | None) -> None:
        """Writes the JSON report (rank zero only; nowhere without a logger or an explicit ``report_path``)."""
        if self.report_path is None or self._ranking is None:
            return
        config = {
            "gamma_p": self.gamma_p,
            "gamma_r": self.gamma_r,
            "coefficient_formula": self.coefficient_formula,
            "adaptation": self.adaptation,
            "start_epoch": self.start_epoch,
            "end_epoch": self.end_epoch,
            "mechanism": self.mechanism,
            "mechanism_in_use": self.mechanism_in_use,
            "modalities": {m: s.as_strings() for m, s in self._specs.items()},
            "probes": self.probes.as_dict(),
            "fingerprint": self.fingerprint,
        }
        report = probe_report(outcome, self._ranking, self._coefficients, self._metric_name(outcome), config)
        if self.boost is not None:
            report["boost"] = self.boost.state_dict()
        if outcome is None and self._probe_scores is not None:
            report.update(source="checkpoint", scores=self._probe_scores)
        write_json_atomically(self.report_path, report)

    def _log_curves(self, trainer: pl.Trainer, outcome: ProbeOutcome) -> None:
        if not trainer.is_global_zero:
            return
        metric = self._metric_name(outcome)
        for logger in trainer.loggers:
            for modality, curve in outcome.curves.items():
                for check, score in enumerate(curve.scores):
                    logger.log_metrics({f"pdmp/probe_{metric}/{modality}": score}, step=check)
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


def _probe_settings(probes: ProbeSettings | Mapping[str, Any] | None) -> ProbeSettings:
    if probes is None:
        return ProbeSettings()
    if isinstance(probes, ProbeSettings):
        return probes
    fields = [f.name for f in dataclasses.fields(ProbeSettings)]
    if isinstance(probes, Mapping):
        unknown = sorted(set(probes) - set(fields))
        if unknown:
            raise config_error(
                "probes", dict(probes), f"a ProbeSettings or a dict of its fields {fields}", f"unknown {unknown}."
            )
        return ProbeSettings(**probes)
    raise config_error("probes", probes, f"None, a ProbeSettings or a dict of its fields {fields}")


class _EpochTimer:
    """Measures one main-training epoch (validation included), or the part of one a short training runs."""

    def __init__(self, epoch_batches: float) -> None:
        self.epoch_batches = epoch_batches
        self.started: float | None = None
        self.batches = 0

    def start(self) -> None:
        if self.started is None:
            self.started = time.perf_counter()

    def epoch_seconds(self) -> float:
        assert self.started is not None
        elapsed = time.perf_counter() - self.started
        if math.isfinite(self.epoch_batches) and 0 < self.batches < self.epoch_batches:
            return elapsed * self.epoch_batches / self.batches
        return elapsed
