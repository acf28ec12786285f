"""What every modality callback shares: modality groups, window, hook lifetime, logging, checkpoints.

A subclass decides *which* coefficient each modality gets (PDMP from a ranking, the baselines from
per-step scores) by filling the live dict behind ``ModalityModulationCallback.coefficients``.
Methods that scale gradients or updates hand them to a gradient-modulation component, a
``Modulator`` chosen by ``mechanism``; methods that act
another way (OPM drops features, MMPareto replaces gradients, AGM scales its responses) build
none and say so in ``mechanism_in_use``. The base opens and closes
the window and guarantees that no hook outlives a fit.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy, ModelParallelStrategy
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.optim import Optimizer

from pdmp_lightning.errors import check_int, config_error
from pdmp_lightning.modality import (
    ModalityGroup,
    ModalitySpecInput,
    parse_modality_specs,
    resolve_modality_groups,
    unassigned_parameter_names,
)
from pdmp_lightning.modulation.mechanisms import (
    MECHANISMS,
    Mechanism,
    Modulator,
    build_modulator,
    is_scale_invariant,
)
from pdmp_lightning.types import NonNegativeInt, PositiveInt


class ModalityModulationCallback(Callback):
    """Base of the callbacks that scale each modality encoder's learning signal.

    Args:
        modalities: Modality name -> dotted submodule path(s) on the LightningModule, or
            ``"re:<regex>"`` patterns over ``named_parameters()`` names.
        start_epoch: First epoch of the modulation window (the epochs before it are warm-up).
        end_epoch: First epoch after the window (exclusive), or None to modulate until the end.
        mechanism: ``"auto"``, ``"activation"``, ``"parameter"``, ``"grad"`` or ``"update"``; see
            ``pdmp_lightning.modulation.mechanisms``.
        log_every_n_steps: Interval of the coefficient and gradient-norm logs; None uses the
            Trainer's ``log_every_n_steps``; 0 turns them off.
        log_prefix: Prefix of the logged names.

    Attributes:
        mechanism_in_use: How the coefficients act, decided when training started: the mechanism
            ``mechanism`` resolved to (``"auto"`` becomes ``"activation"``, ``"grad"`` or
            ``"update"``), or the method's own way (``"responses"``, ``"features"``, ``"replace"``,
            ``"none"``); None before.
        groups: Modality -> its resolved parameter group (filled when fitting starts).

    Examples:
        >>> modalities = {"audio": "encoders.audio", "visual": "encoders.visual"}
        >>> callback = ModalityModulationCallback(modalities, start_epoch=2)
        >>> callback.modality_names, callback.in_window(1), callback.in_window(2)
        (['audio', 'visual'], False, True)
    """

    #: What ``mechanism="auto"`` picks for SGD-like optimizers on unsharded strategies.
    default_gradient_mechanism: str = "activation"
    #: The way a method acts when it is none of the gradient mechanisms (no modulator is built).
    own_mechanism: str | None = None

    def __init__(
        self,
        modalities: Mapping[str, ModalitySpecInput],
        *,
        start_epoch: NonNegativeInt = 0,
        end_epoch: PositiveInt | None = None,
        mechanism: Mechanism = "auto",
        log_every_n_steps: NonNegativeInt | None = None,
        log_prefix: str = "modulation",
    ) -> None:
        super().__init__()
        self._specs = parse_modality_specs(modalities)
        check_int("start_epoch", start_epoch, 0, hint="epochs before it are warm-up without modulation.")
        check_int(
            "end_epoch",
            end_epoch,
            start_epoch + 1,
            optional=True,
            allowed=f"None or an integer > start_epoch ({start_epoch})",
            hint="end_epoch is exclusive.",
        )
        if mechanism not in MECHANISMS:
            raise config_error("mechanism", mechanism, f"one of {list(MECHANISMS)}")
        check_int("log_every_n_steps", log_every_n_steps, 0, optional=True)
        self.start_epoch = start_epoch
        self.end_epoch = end_epoch
        self.mechanism: Mechanism = mechanism
        self.log_every_n_steps = log_every_n_steps
        self.log_prefix = log_prefix
        # Modality -> coefficient applied while modulating; the modulator reads this dict live.
        self._coefficients: dict[str, float] = {}
        self.groups: dict[str, ModalityGroup] = {}
        self.mechanism_in_use: str | None = None
        self._modulator: Modulator | None = None
        self._reach_checked = False
        self._active = False
        self._group_parameters_by_modality: dict[str, list[torch.nn.Parameter]] = {}
        self._reported_non_finite: set[str] = set()

    @property
    def modality_names(self) -> list[str]:
        """The modalities, in the order given."""
        return list(self._specs)

    @property
    def coefficients(self) -> dict[str, float]:
        """Modality -> the coefficient applied while modulating (a copy; empty until the method knows them)."""
        return dict(self._coefficients)

    @property
    def multipliers(self) -> dict[str, float]:
        """Deprecated name of ``coefficients`` (one word for one concept since 0.2)."""
        warnings.warn("`multipliers` is deprecated; use `coefficients` (a copy).", DeprecationWarning, stacklevel=2)
        return self._coefficients

    @property
    def state_key(self) -> str:
        """Checkpoint key: the class and its modality selection, so that two instances keep their own state."""
        return self._generate_state_key(modalities={m: s.as_strings() for m, s in self._specs.items()})

    @property
    def _legacy_state_key(self) -> str:  # type: ignore[override]
        # Lightning's fallback when state_key is absent: checkpoints of pdmp-lightning 0.1 used the class name.
        return type(self).__qualname__

    @property
    def is_modulating(self) -> bool:
        """Whether the modulation window is open and the hooks are registered right now."""
        return self._active

    def in_window(self, epoch: int) -> bool:
        """Whether ``epoch`` lies in the modulation window."""
        return self.start_epoch <= epoch and (self.end_epoch is None or epoch < self.end_epoch)

    # --- Lightning hooks ------------------------------------------------------------------------

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._check_strategy(trainer)

    def _check_strategy(self, trainer: pl.Trainer) -> None:
        """Refuses, before anything is built, a strategy this callback cannot act under."""
        if isinstance(trainer.strategy, DeepSpeedStrategy):
            raise config_error(
                "Trainer(strategy=...)",
                type(trainer.strategy).__name__,
                "a single-device, DDP, FSDP or ModelParallel strategy",
                "DeepSpeed owns the backward pass and the optimizer step, so the callback cannot scale a "
                "modality's gradients or updates reliably there; use FSDP for sharded training.",
            )
        if self._is_sharded(trainer) and self.mechanism in ("activation", "parameter"):
            raise config_error(
                "mechanism",
                self.mechanism,
                "'auto', 'grad' or 'update' under FSDP / ModelParallel",
                "parameter and activation hooks are not reliable on sharded parameters.",
            )

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._detach()
        self._reported_non_finite.clear()
        self.groups = resolve_modality_groups(pl_module, self._specs)
        untouched = unassigned_parameter_names(pl_module, self.groups)
        sizes = ", ".join(f"{m}: {len(g.parameter_names)} tensors" for m, g in self.groups.items())
        rank_zero_info(f"{type(self).__name__}: modality groups {sizes}.")
        if untouched:
            shown = ", ".join(untouched[:10]) + (f", ... ({len(untouched) - 10} more)" if len(untouched) > 10 else "")
            rank_zero_info(
                f"{type(self).__name__}: {len(untouched)} trainable tensors in no modality, never touched: {shown}"
            )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._install_modulator(self._resolve_mechanism(trainer), pl_module)
        self._warn_if_the_window_never_opens(trainer)

    def _warn_if_the_window_never_opens(self, trainer: pl.Trainer) -> None:
        """A window that starts at or after the last epoch modulates nothing: say so once, at the start."""
        last = trainer.max_epochs
        if last is not None and last >= 0 and self.start_epoch >= last:
            rank_zero_warn(
                f"{type(self).__name__}: the modulation window starts at epoch {self.start_epoch}, but training "
                f"stops after {last} epoch(s) (max_epochs={last}): nothing will be modulated in this fit. Hint: "
                "lower `start_epoch` or train longer."
            )

    def _install_modulator(self, mechanism: str, pl_module: pl.LightningModule) -> None:
        self.mechanism_in_use = mechanism
        named = dict(pl_module.named_parameters())
        self._group_parameters_by_modality = {m: [named[n] for n in g.parameter_names] for m, g in self.groups.items()}
        self._modulator = self._build_modulator(mechanism, pl_module)
        rank_zero_info(f"{type(self).__name__}: mechanism '{mechanism}'{self._mechanism_detail()}.")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.mechanism_in_use is None:
            return
        if self.in_window(trainer.current_epoch) and not self._active:
            self._activate(trainer)
        elif not self.in_window(trainer.current_epoch) and self._active:
            self._detach()

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        if self._modulator is not None:
            self._modulator.before_backward()

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer
    ) -> None:
        if self._active:
            if not self._reach_checked:
                self._check_the_modulation_reaches_the_model()
                self._reach_checked = True
            self._before_step_modulation(trainer, pl_module, optimizer)
            if self._modulator is not None:
                self._modulator.before_optimizer_step(optimizer)
            self._after_step_modulation(trainer, pl_module, optimizer)
        interval = (
            getattr(trainer, "log_every_n_steps", 50) if self.log_every_n_steps is None else self.log_every_n_steps
        )
        if interval and trainer.global_step % interval == 0 and self.mechanism_in_use is not None:
            metrics = self._step_metrics()
            if getattr(trainer.precision_plugin, "scaler", None) is None:
                # With a loss scaler, non-finite gradients are expected now and then: it skips those steps.
                self._warn_if_not_finite(trainer, metrics)
            pl_module.log_dict(metrics, on_step=True, on_epoch=False)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._detach()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._detach()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._detach()

    # --- helpers --------------------------------------------------------------------------------

    def _activate(self, trainer: pl.Trainer) -> None:
        """Starts modulating (the window opened); subclasses add what else they register."""
        self._active = True
        self._reach_checked = False
        if self._modulator is not None:
            self._modulator.attach(trainer.optimizers)

    def _check_the_modulation_reaches_the_model(self) -> None:
        """At the first modulated step: a modality whose parameters got no gradient would never be modulated."""
        if self._modulator is None:
            return  # the method acts its own way and checks that itself
        for modality, parameters in self._group_parameters_by_modality.items():
            if parameters and all(p.grad is None for p in parameters):
                raise config_error(
                    f"modalities[{modality!r}]",
                    f"{len(parameters)} parameters, none with a gradient at the first modulated step",
                    "parameters that the training loss reaches",
                    "their encoder was not used in this step's forward, or the selection names parameters the loss "
                    f"does not depend on; {type(self).__name__}'s coefficients would never reach them.",
                )

    def _detach(self) -> None:
        """Stops modulating and removes every hook; safe to call at any time, twice included."""
        self._active = False
        if self._modulator is not None:
            self._modulator.detach()

    def _build_modulator(self, mechanism: str, pl_module: pl.LightningModule) -> Modulator | None:
        """The gradient-modulation component for ``mechanism``; None for a method that acts another way."""
        if mechanism not in MECHANISMS:
            return None
        return build_modulator(mechanism, self.groups, dict(pl_module.named_parameters()), self._coefficients)

    def _before_step_modulation(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer) -> None:
        """Runs in ``on_before_optimizer_step`` before the mechanism's own work (gradients unscaled, accumulated)."""

    def _after_step_modulation(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer) -> None:
        """Runs in ``on_before_optimizer_step`` after the mechanism's own work, before clipping and the step."""

    def _method_metrics(self) -> dict[str, float | torch.Tensor]:
        """Method-specific values logged with the coefficients (scores, ratios, ...)."""
        return {}

    def _step_metrics(self) -> dict[str, float | torch.Tensor]:
        metrics: dict[str, float | torch.Tensor] = dict(self._method_metrics()) if self.is_modulating else {}
        for modality, parameters in self._group_parameters_by_modality.items():
            norms = [torch.linalg.vector_norm(p.grad.detach().float()) for p in parameters if p.grad is not None]
            # A tensor, not a float: no host sync here; the logger reads it when it writes.
            metrics[f"{self.log_prefix}/grad_norm/{modality}"] = (
                torch.linalg.vector_norm(torch.stack(norms)) if norms else 0.0
            )
            effective = self._coefficients.get(modality, 1.0) if self.is_modulating else 1.0
            metrics[f"{self.log_prefix}/coefficient/{modality}"] = effective
        return metrics

    def _warn_if_not_finite(self, trainer: pl.Trainer, metrics: Mapping[str, float | torch.Tensor]) -> None:
        """Warns once per modality and fit when its gradient norm (computed for the log) is NaN or infinite."""
        marker = "/grad_norm/"
        for name, value in metrics.items():
            modality = name.split(marker, 1)[1] if marker in name else None
            if modality is None or modality in self._reported_non_finite:
                continue
            if not bool(torch.isfinite(torch.as_tensor(value))):
                self._reported_non_finite.add(modality)
                rank_zero_warn(
                    f"{type(self).__name__}: the gradient of modality '{modality}' is not finite (NaN or inf) at step "
                    f"{trainer.global_step}. The model's loss or inputs produced it; the callback only multiplies "
                    "gradients and cannot repair them. Hint: check that modality's inputs, lower the learning rate, "
                    "or run Trainer(detect_anomaly=True) to find the operation."
                )

    def _resolve_mechanism(self, trainer: pl.Trainer) -> str:
        if self.own_mechanism is not None:
            self._check_strategy(trainer)  # refused in setup already; here for direct calls
            return self.own_mechanism
        group_ids = {id(p) for p in self._group_parameters(trainer)}
        holding = [
            o for o in trainer.optimizers if any(id(p) in group_ids for g in o.param_groups for p in g["params"])
        ]
        adam_like = [type(o).__name__ for o in holding if is_scale_invariant(o)]
        sharded = self._is_sharded(trainer)
        if self.mechanism == "auto":
            if adam_like:
                return "update"
            return "grad" if sharded else self.default_gradient_mechanism
        self._check_strategy(trainer)  # refused in setup already; here for direct calls
        if adam_like and self.mechanism != "update":
            rank_zero_warn(
                f"mechanism='{self.mechanism}' scales gradients, but {adam_like} normalise the gradient's scale away, "
                "so constant coefficients change almost nothing. Hint: use mechanism='auto' or 'update'."
            )
        return self.mechanism

    def _refuse_sharded(self, trainer: pl.Trainer, what: str, why: str) -> None:
        """Raises when the strategy shards parameters, for a method that cannot act on sharded ones."""
        if self._is_sharded(trainer):
            raise config_error(
                "Trainer(strategy=...)",
                type(trainer.strategy).__name__,
                f"a single-device or DDP strategy for {what}",
                why,
            )

    @staticmethod
    def _is_sharded(trainer: pl.Trainer) -> bool:
        return isinstance(trainer.strategy, FSDPStrategy | ModelParallelStrategy)

    def _group_parameters(self, trainer: pl.Trainer) -> list[Any]:
        named = dict(trainer.lightning_module.named_parameters())
        return [named[n] for g in self.groups.values() for n in g.parameter_names]

    def _mechanism_detail(self) -> str:
        if self.mechanism_in_use != "activation":
            return ""
        at_outputs = [m for m, g in self.groups.items() if g.output_scaling_is_exact]
        hooked = [m for m in self.groups if m not in at_outputs]
        detail = f" (gradient scaled at the outputs of {at_outputs}"
        return detail + (f"; parameter hooks for {hooked})" if hooked else ")")
