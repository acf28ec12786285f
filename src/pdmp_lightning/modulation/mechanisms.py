"""How a per-modality multiplier reaches the optimizer: four mechanisms behind one small interface.

- ``"activation"``: a forward hook on each modality's submodules multiplies the gradient flowing
  back into their output by k (identity forward), and divides the gradient leaving through their
  inputs by k so nothing upstream changes. O(batch x features) per step; exact when the group is
  given by submodule paths whose parameters are only used inside those submodules' forward.
- ``"parameter"``: a tensor hook on every parameter of the group scales each backward's incoming
  gradient. Exact whatever the forward path; O(parameters).
- ``"grad"``: ``p.grad`` is scaled in ``on_before_optimizer_step`` (accumulated, unscaled by AMP,
  all-reduced). Works on every strategy, FSDP included.
- ``"update"``: the optimizer's step is scaled, ``p <- p_old + k * (p_new - p_old)``, i.e. a
  per-modality learning-rate multiplier. Needed for optimizers whose update ignores the gradient's
  scale (Adam family): there a gradient multiplier cancels out.

Coefficients are read at the moment they are applied from a mapping the callback owns, so methods
whose coefficients change every step share the same mechanisms.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, get_args

import torch
from lightning.pytorch.utilities import rank_zero_warn
from lightning_utilities.core.apply_func import apply_to_collection
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.utils.hooks import RemovableHandle

from pdmp_lightning.modality import ModalityGroup

Mechanism = Literal["auto", "activation", "parameter", "grad", "update"]
MECHANISMS: tuple[str, ...] = get_args(Mechanism)

#: Optimizers whose update is (nearly) invariant to a constant rescaling of the gradient.
SCALE_INVARIANT_OPTIMIZERS: tuple[type[Optimizer], ...] = (
    torch.optim.Adam,
    torch.optim.AdamW,
    torch.optim.Adamax,
    torch.optim.NAdam,
    torch.optim.RAdam,
    torch.optim.RMSprop,
    torch.optim.Adagrad,
    torch.optim.Adadelta,
    torch.optim.SparseAdam,
)
#: Name fragments of third-party optimizers of the same kind (FusedAdam, Adam8bit, Lion, Adafactor...).
SCALE_INVARIANT_NAME_HINTS = (
    "adam",
    "lion",
    "adafactor",
    "rmsprop",
    "adagrad",
    "adadelta",
    "lamb",
    "sophia",
    "prodigy",
)


def at_least_float32(tensor: Tensor) -> Tensor:
    """``tensor`` in float32 if it is in a half format (AMP logits), else unchanged (float64 stays)."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


def is_scale_invariant(optimizer: Optimizer) -> bool:
    """Whether ``optimizer``'s update ignores a constant scale on the gradient (Adam-like)."""
    if isinstance(optimizer, SCALE_INVARIANT_OPTIMIZERS):
        return True
    name = type(optimizer).__name__.lower()
    return any(hint in name for hint in SCALE_INVARIANT_NAME_HINTS)


class Modulator:
    """Applies live per-modality multipliers to the parameters of modality groups (the base does nothing).

    Args:
        groups: Modality name -> resolved group.
        parameters: Parameter name -> parameter, for the module being trained.
        coefficients: Modality name -> multiplier; read each time a multiplier is applied.
    """

    name: str = ""

    def __init__(
        self,
        groups: Mapping[str, ModalityGroup],
        parameters: Mapping[str, nn.Parameter],
        coefficients: Mapping[str, float],
    ) -> None:
        self.groups = dict(groups)
        self.coefficients = coefficients
        self.group_parameters = {m: [parameters[n] for n in g.parameter_names] for m, g in groups.items()}
        self._handles: list[RemovableHandle] = []
        self.attached = False

    def attach(self, optimizers: Sequence[Optimizer]) -> None:
        """Starts modulating (registers whatever hooks the mechanism needs)."""
        self.attached = True

    def detach(self) -> None:
        """Stops modulating: removes every hook this modulator registered. Safe to call twice."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.attached = False

    def before_backward(self) -> None:
        """Called before each backward pass (every micro-batch)."""

    def before_optimizer_step(self, optimizer: Optimizer) -> None:
        """Called once per optimizer step, after AMP unscaling and before clipping."""

    def _coefficient(self, modality: str) -> float:
        return float(self.coefficients.get(modality, 1.0))


class BackwardHookModulator(Modulator):
    """The ``"activation"`` and ``"parameter"`` mechanisms: scale each micro-batch's gradient in backward.

    Groups listed in ``activation_groups`` are scaled at their submodules' outputs; the others by
    parameter hooks. If an activation group's forward did not run in a training step (its
    parameters are used some other way), that group switches to parameter hooks with a warning.
    """

    name = "activation"

    def __init__(
        self,
        groups: Mapping[str, ModalityGroup],
        parameters: Mapping[str, nn.Parameter],
        coefficients: Mapping[str, float],
        activation_groups: Iterable[str] = (),
    ) -> None:
        super().__init__(groups, parameters, coefficients)
        self.activation_groups = set(activation_groups)
        self._parameter_handles: dict[str, list[RemovableHandle]] = {}
        self._forward_ran: set[str] = set()
        self._checked = False

    def attach(self, optimizers: Sequence[Optimizer]) -> None:
        self.detach()
        for modality in self.groups:
            if modality in self.activation_groups:
                self._attach_activation(modality)
            else:
                self._attach_parameters(modality)
        self._forward_ran.clear()
        self.attached = True

    def detach(self) -> None:
        super().detach()
        self._parameter_handles.clear()

    def before_backward(self) -> None:
        if not self.attached:
            return
        silent = [
            m
            for m in self.activation_groups
            if m not in self._forward_ran and m not in self._parameter_handles and self._coefficient(m) != 1.0
        ]
        for modality in silent:
            paths = ", ".join(self.groups[modality].module_paths)
            rank_zero_warn(
                f"The forward of `{paths}` (modality '{modality}') did not run in this training step, so scaling "
                f"its output gradient would miss its parameters' gradients. Modality '{modality}' now uses "
                "parameter hooks, which scale them whatever path they take. Hint: pass mechanism='parameter' "
                "to choose this up front, or call the submodule itself in forward."
            )
            self._attach_parameters(modality)
        self._forward_ran.clear()

    def _attach_parameters(self, modality: str) -> None:
        handles = [p.register_hook(self._scaler(modality)) for p in self.group_parameters[modality] if p.requires_grad]
        self._parameter_handles[modality] = handles
        self._handles.extend(handles)

    def _attach_activation(self, modality: str) -> None:
        for module in self.groups[modality].modules:
            self._handles.append(module.register_forward_pre_hook(self._input_hook(modality), with_kwargs=True))
            self._handles.append(module.register_forward_hook(self._output_hook(modality)))

    def _scaler(self, modality: str, inverse: bool = False) -> Callable[[Tensor], Tensor]:
        def scale(grad: Tensor) -> Tensor:
            k = self._coefficient(modality)
            return grad / k if inverse else grad * k

        return scale

    def _output_hook(self, modality: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if not torch.is_grad_enabled() or modality in self._parameter_handles:
                return
            self._forward_ran.add(modality)

            def register(tensor: Tensor) -> Tensor:
                if tensor.requires_grad:
                    tensor.register_hook(self._scaler(modality))
                return tensor

            apply_to_collection(output, Tensor, register)

        return hook

    def _input_hook(self, modality: str) -> Callable[..., tuple[Any, Any] | None]:
        def hook(module: nn.Module, args: Any, kwargs: Any) -> tuple[Any, Any] | None:
            if not torch.is_grad_enabled() or modality in self._parameter_handles:
                return None
            changed = False

            def guard(tensor: Tensor) -> Tensor:
                nonlocal changed
                if not tensor.requires_grad:
                    return tensor
                # A view gives the encoder's use of this input its own node in the graph, so the
                # inverse scale touches only the gradient that flows back through the encoder.
                changed = True
                view = tensor.view_as(tensor)
                view.register_hook(self._scaler(modality, inverse=True))
                return view

            new_args, new_kwargs = apply_to_collection((args, kwargs), Tensor, guard)
            return (new_args, new_kwargs) if changed else None

        return hook


class ParameterHookModulator(BackwardHookModulator):
    """The ``"parameter"`` mechanism: a tensor hook on every parameter of every group."""

    name = "parameter"

    def __init__(
        self,
        groups: Mapping[str, ModalityGroup],
        parameters: Mapping[str, nn.Parameter],
        coefficients: Mapping[str, float],
    ) -> None:
        super().__init__(groups, parameters, coefficients, activation_groups=())


class GradModulator(Modulator):
    """The ``"grad"`` mechanism: scales ``p.grad`` once per optimizer step (any strategy, FSDP included)."""

    name = "grad"

    def before_optimizer_step(self, optimizer: Optimizer) -> None:
        if not self.attached:
            return
        in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
        with torch.no_grad():
            for modality, parameters in self.group_parameters.items():
                k = self._coefficient(modality)
                if k == 1.0:
                    continue
                for parameter in parameters:
                    if parameter.grad is not None and id(parameter) in in_optimizer:
                        parameter.grad.mul_(k)


class UpdateModulator(Modulator):
    """The ``"update"`` mechanism: each modality's parameters move k times as far as the optimizer moved them.

    Equivalent to a per-modality learning-rate multiplier (weight decay included), for any optimizer.
    """

    name = "update"

    def __init__(
        self,
        groups: Mapping[str, ModalityGroup],
        parameters: Mapping[str, nn.Parameter],
        coefficients: Mapping[str, float],
    ) -> None:
        super().__init__(groups, parameters, coefficients)
        self._before_step: dict[int, list[tuple[nn.Parameter, Tensor, str]]] = {}

    def attach(self, optimizers: Sequence[Optimizer]) -> None:
        self.detach()
        for optimizer in optimizers:
            self._handles.append(optimizer.register_step_pre_hook(self._snapshot))
            self._handles.append(optimizer.register_step_post_hook(self._rescale))
        self.attached = True

    def detach(self) -> None:
        super().detach()
        self._before_step.clear()

    def _snapshot(self, optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
        snapshot: list[tuple[nn.Parameter, Tensor, str]] = []
        for modality, parameters in self.group_parameters.items():
            if self._coefficient(modality) == 1.0:
                continue
            snapshot.extend((p, p.detach().clone(), modality) for p in parameters if id(p) in in_optimizer)
        self._before_step[id(optimizer)] = snapshot

    def _rescale(self, optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        with torch.no_grad():
            for parameter, before, modality in self._before_step.pop(id(optimizer), []):
                # p + (1 - k) * (before - p) == before + k * (p - before)
                parameter.lerp_(before, 1.0 - self._coefficient(modality))


def build_modulator(
    mechanism: str,
    groups: Mapping[str, ModalityGroup],
    parameters: Mapping[str, nn.Parameter],
    coefficients: Mapping[str, float],
) -> Modulator:
    """Builds the modulator of a resolved mechanism (not ``"auto"``)."""
    if mechanism == "activation":
        eligible = [m for m, g in groups.items() if g.output_scaling_is_exact]
        return BackwardHookModulator(groups, parameters, coefficients, activation_groups=eligible)
    if mechanism == "parameter":
        return ParameterHookModulator(groups, parameters, coefficients)
    if mechanism == "grad":
        return GradModulator(groups, parameters, coefficients)
    if mechanism == "update":
        return UpdateModulator(groups, parameters, coefficients)
    raise ValueError(f"unknown mechanism {mechanism!r}")
