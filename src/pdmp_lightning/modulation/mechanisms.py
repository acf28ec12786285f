"""How a per-modality multiplier reaches the optimizer: four mechanisms behind one small interface.

- ``"activation"``: a forward hook on each modality's submodules multiplies the gradient flowing
  back into their output by k (identity forward), and divides the gradient leaving through their
  inputs by k so nothing upstream changes. O(batch x features) per step; exact when the group is
  given by submodule paths whose parameters are only used inside those submodules' forward.
- ``"parameter"``: a tensor hook on every parameter of the group scales each backward's incoming
  gradient. Exact whatever the forward path; O(parameters).
- ``"grad"``: ``p.grad`` is scaled in ``on_before_optimizer_step`` (accumulated, unscaled by AMP,
  all-reduced). Works on every strategy, FSDP included.
- ``"update"``: each modality's step is k times as long (weight decay included): a per-modality
  learning-rate multiplier. Needed for optimizers whose update ignores the gradient's scale (Adam
  family): there a gradient multiplier cancels out. For optimizers whose step is proportional to
  the learning rate (every ``torch.optim`` one but ASGD, Rprop, LBFGS and Adafactor, and those given
  to ``register_learning_rate_linear``), each parameter group is split by modality for the
  duration of ``optimizer.step`` only, with its learning rate multiplied: O(parameter groups) work,
  no copy, and schedulers and checkpoints only ever see the user's groups and rates. For any other
  optimizer the modulated parameters are copied before the step and moved ``p_old + k * (p_new -
  p_old)`` after it (a full copy; a warning says so).

Coefficients are read at the moment they are applied from a mapping the callback owns, so methods
whose coefficients change every step share the same mechanisms. The ``"update"`` mechanism applies
them once this step's backward and ``on_before_optimizer_step`` have run (inside ``optimizer.step``
when Lightning passes it a closure): each step uses its own coefficient.
"""

from __future__ import annotations

import inspect
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


_LINEAR_CANDIDATES = (
    "SGD",
    "Adam",
    "AdamW",
    "Adamax",
    "NAdam",
    "RAdam",
    "RMSprop",
    "Adagrad",
    "Adadelta",
    "SparseAdam",
    "Muon",
)
#: Optimizers whose step is proportional to the group's learning rate (weight decay included), so that
#: multiplying it by k moves a parameter exactly k times as far: the ``"update"`` mechanism scales
#: their learning rates. ASGD, Rprop, LBFGS and Adafactor are not (their rate enters their state or
#: is clipped).
LEARNING_RATE_LINEAR_OPTIMIZERS: list[type[Optimizer]] = [
    getattr(torch.optim, name) for name in _LINEAR_CANDIDATES if hasattr(torch.optim, name)
]


def register_learning_rate_linear(optimizer_class: type[Optimizer]) -> type[Optimizer]:
    """Declares that ``optimizer_class``'s step is proportional to each group's ``lr``.

    Then the ``"update"`` mechanism multiplies learning rates for it instead of copying parameters.
    The step must move each parameter by ``lr * f(state, gradient, parameter)`` with ``f`` not
    depending on ``lr`` (Lion, LAMB and most Adam variants qualify). Usable as a class decorator.

    Examples:
        >>> class MyAdam(torch.optim.Adam):
        ...     pass
        >>> register_learning_rate_linear(MyAdam) is MyAdam
        True
    """
    if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, Optimizer)):
        raise TypeError(f"register_learning_rate_linear expects an Optimizer subclass, got {optimizer_class!r}")
    if optimizer_class not in LEARNING_RATE_LINEAR_OPTIMIZERS:
        LEARNING_RATE_LINEAR_OPTIMIZERS.append(optimizer_class)
    return optimizer_class


def is_learning_rate_linear(optimizer: Optimizer) -> bool:
    """Whether ``optimizer``'s step is known to be proportional to its groups' learning rates.

    A subclass of a known optimizer counts only when it keeps that optimizer's ``step``.
    """
    step = inspect.unwrap(type(optimizer).step)
    for known in LEARNING_RATE_LINEAR_OPTIMIZERS:
        if type(optimizer) is known or (isinstance(optimizer, known) and step is inspect.unwrap(known.step)):
            return True
    return False


def at_least_float32(tensor: Tensor) -> Tensor:
    """``tensor`` in float32 if it is in a half format (AMP logits), else unchanged (float64 stays)."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


def is_scale_invariant(optimizer: Optimizer) -> bool:
    """Whether ``optimizer``'s update ignores a constant scale on the gradient (Adam-like)."""
    if isinstance(optimizer, SCALE_INVARIANT_OPTIMIZERS):
        return True
    name = type(optimizer).__name__.lower()
    return any(hint in name for hint in SCALE_INVARIANT_NAME_HINTS)


def _group_sizes(optimizer: Optimizer) -> tuple[int, ...]:
    """How many parameters each group holds: the layout that the per-optimizer caches are keyed by."""
    return tuple(len(group["params"]) for group in optimizer.param_groups)


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
        self._in_optimizer: dict[int, tuple[tuple[int, ...], dict[str, list[nn.Parameter]]]] = {}

    def parameters_in(self, optimizer: Optimizer) -> dict[str, list[nn.Parameter]]:
        """Modality -> its parameters that ``optimizer`` holds (cached until the optimizer's groups change)."""
        sizes = _group_sizes(optimizer)
        cached = self._in_optimizer.get(id(optimizer))
        if cached is not None and cached[0] == sizes:
            return cached[1]
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        found = {m: [p for p in ps if id(p) in held] for m, ps in self.group_parameters.items()}
        self._in_optimizer[id(optimizer)] = (sizes, found)
        return found

    def attach(self, optimizers: Sequence[Optimizer]) -> None:
        """Starts modulating (registers whatever hooks the mechanism needs)."""
        self.attached = True

    def detach(self) -> None:
        """Stops modulating: removes every hook this modulator registered. Safe to call twice."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._in_optimizer.clear()
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

    def _scaler(self, modality: str, inverse: bool = False) -> Callable[[Tensor], Tensor | None]:
        def scale(grad: Tensor) -> Tensor | None:
            k = self._coefficient(modality)
            if k == 1.0:
                return None  # the gradient unchanged, without a pass over it
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

            if isinstance(output, Tensor):
                register(output)  # the common case, without walking a collection
            else:
                apply_to_collection(output, Tensor, register)

        return hook

    def _input_hook(self, modality: str) -> Callable[..., tuple[Any, Any] | None]:
        def hook(module: nn.Module, args: Any, kwargs: Any) -> tuple[Any, Any] | None:
            if not torch.is_grad_enabled() or modality in self._parameter_handles:
                return None
            if not kwargs and all(isinstance(a, Tensor) and not a.requires_grad for a in args):
                return None  # raw inputs: nothing upstream to protect
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
        with torch.no_grad():
            for modality, parameters in self.parameters_in(optimizer).items():
                k = self._coefficient(modality)
                if k == 1.0:
                    continue
                for parameter in parameters:
                    if parameter.grad is not None:
                        parameter.grad.mul_(k)


class UpdateModulator(Modulator):
    """The ``"update"`` mechanism: each modality's parameters move k times as far as the optimizer moved them.

    A per-modality learning-rate multiplier, weight decay included, applied with this step's
    coefficients. How, per optimizer: learning rates of split groups during ``step`` when the
    optimizer is learning-rate linear (``is_learning_rate_linear``), a parameter copy otherwise.
    """

    name = "update"

    def __init__(
        self,
        groups: Mapping[str, ModalityGroup],
        parameters: Mapping[str, nn.Parameter],
        coefficients: Mapping[str, float],
    ) -> None:
        super().__init__(groups, parameters, coefficients)
        self._scalings: dict[int, _LearningRateScaling | _SnapshotScaling] = {}
        #: Optimizers inside ``step(closure)`` whose closure (this step's backward) has not finished.
        self._awaiting_closure: set[int] = set()
        #: Optimizers whose scaling is applied until their step ends.
        self._applied: set[int] = set()
        #: Names of the optimizers scaled through parameter copies (each warned about once).
        self._copying: set[str] = set()

    @property
    def copies_parameters(self) -> list[str]:
        """Names of the optimizers this modulator scaled through parameter copies (not learning-rate linear)."""
        return sorted(self._copying)

    def attach(self, optimizers: Sequence[Optimizer]) -> None:
        self.detach()
        for optimizer in optimizers:
            linear = is_learning_rate_linear(optimizer)
            self._scalings[id(optimizer)] = (_LearningRateScaling if linear else _SnapshotScaling)(optimizer)
            name = type(optimizer).__name__
            if not linear and name not in self._copying:
                self._copying.add(name)
                rank_zero_warn(
                    f"mechanism='update' copies the modulated parameters before every {name} step (extra memory "
                    f"of their size): {name}'s step is not known to be proportional to its learning rate, so "
                    "multiplying the rate would not move a modality exactly k times as far. Hint: if each "
                    "parameter moves by lr * f(state, gradient, parameter), declare it with "
                    f"`pdmp_lightning.modulation.register_learning_rate_linear({name})` to scale learning rates "
                    "instead."
                )
            self._handles.append(optimizer.register_step_pre_hook(self._step_starts))
            self._handles.append(optimizer.register_step_post_hook(self._step_ends))
        self.attached = True

    def detach(self) -> None:
        # An exception inside a step leaves its scaling applied: undo it (learning rates, not parameters).
        for key in list(self._applied):
            self._scalings[key].abandon()
        self._applied.clear()
        self._awaiting_closure.clear()
        self._scalings.clear()
        super().detach()

    def before_optimizer_step(self, optimizer: Optimizer) -> None:
        # Lightning calls this from inside the closure, after this step's backward: the coefficients are final.
        if id(optimizer) in self._awaiting_closure:
            self._awaiting_closure.discard(id(optimizer))
            self._apply(optimizer)

    def _step_starts(self, optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        closure = kwargs.get("closure", args[1] if len(args) > 1 else None)
        if closure is None:
            self._apply(optimizer)  # gradients are final (AMP's scaler, manual optimization)
        else:
            self._awaiting_closure.add(id(optimizer))

    def _step_ends(self, optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        key = id(optimizer)
        if key in self._awaiting_closure:
            self._awaiting_closure.discard(key)
            if any(self._coefficient(m) != 1.0 for m in self.groups):
                raise RuntimeError(
                    f"{type(optimizer).__name__}.step(closure) ran a closure that did not go through Lightning's "
                    "on_before_optimizer_step, so mechanism='update' could not scale this step. Hint: step the "
                    "optimizer returned by `self.optimizers()` (a LightningOptimizer), or call "
                    "`optimizer.step()` without a closure after `manual_backward`."
                )
        if key in self._applied:
            self._applied.discard(key)
            self._scalings[key].finish()

    def _apply(self, optimizer: Optimizer) -> None:
        key = id(optimizer)
        scaling = self._scalings.get(key)
        if scaling is None or key in self._applied:
            return
        if scaling.start(self.parameters_in(optimizer), self._coefficient):
            self._applied.add(key)


class _LearningRateScaling:
    """Splits each parameter group by modality for one step, each part's learning rate multiplied by its k."""

    def __init__(self, optimizer: Optimizer) -> None:
        self._optimizer = optimizer
        self._original: list[dict[str, Any]] | None = None
        self._parts: tuple[tuple[int, ...], list[list[tuple[str | None, list[int]]]]] | None = None

    def start(self, in_optimizer: Mapping[str, Sequence[nn.Parameter]], coefficient: Callable[[str], float]) -> bool:
        """Puts the split groups in place for this step; False when every coefficient is 1 (nothing to do)."""
        if all(coefficient(m) == 1.0 for m, ps in in_optimizer.items() if ps):
            return False
        groups = self._optimizer.param_groups
        split: list[dict[str, Any]] = []
        for group, parts in zip(groups, self._partition(in_optimizer), strict=True):
            if len(parts) == 1 and (parts[0][0] is None or coefficient(parts[0][0]) == 1.0):
                split.append(group)  # untouched: the optimizer may even write into it
                continue
            for modality, positions in parts:
                part = dict(group)
                part["params"] = [group["params"][i] for i in positions]
                if "param_names" in group:
                    part["param_names"] = [group["param_names"][i] for i in positions]
                if modality is not None:
                    part["lr"] = group["lr"] * coefficient(modality)
                split.append(part)
        self._original = groups
        self._optimizer.param_groups = split
        return True

    def finish(self) -> None:
        """Puts the user's groups back (the step is over)."""
        if self._original is not None:
            self._optimizer.param_groups = self._original
            self._original = None

    #: An interrupted step only leaves the split groups behind: put the user's back.
    abandon = finish

    def _partition(
        self, in_optimizer: Mapping[str, Sequence[nn.Parameter]]
    ) -> list[list[tuple[str | None, list[int]]]]:
        """Per group, (modality or None, positions of its parameters in the group); cached per group layout."""
        sizes = _group_sizes(self._optimizer)
        if self._parts is not None and self._parts[0] == sizes:
            return self._parts[1]
        owner = {id(p): m for m, ps in in_optimizer.items() for p in ps}
        partition = []
        for group in self._optimizer.param_groups:
            positions: dict[str | None, list[int]] = {}
            for index, parameter in enumerate(group["params"]):
                positions.setdefault(owner.get(id(parameter)), []).append(index)
            partition.append(list(positions.items()))
        self._parts = (sizes, partition)
        return partition


class _SnapshotScaling:
    """Copies the modulated parameters before the step and moves them k times as far after it."""

    def __init__(self, optimizer: Optimizer) -> None:
        self._before: list[tuple[nn.Parameter, Tensor, float]] = []

    def start(self, in_optimizer: Mapping[str, Sequence[nn.Parameter]], coefficient: Callable[[str], float]) -> bool:
        """Copies the parameters of the modalities whose coefficient is not 1, with that coefficient."""
        coefficients = {m: coefficient(m) for m in in_optimizer}
        self._before = [
            (p, p.detach().clone(), k) for m, k in coefficients.items() if k != 1.0 for p in in_optimizer[m]
        ]
        return bool(self._before)

    def finish(self) -> None:
        """Moves each copied parameter k times as far as the optimizer did."""
        with torch.no_grad():
            for parameter, before, k in self._before:
                # p + (1 - k) * (before - p) == before + k * (p - before)
                parameter.lerp_(before, 1.0 - k)
        self._before = []

    def abandon(self) -> None:
        """An interrupted step: forget the copies (the parameters keep whatever the optimizer did)."""
        self._before = []


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
