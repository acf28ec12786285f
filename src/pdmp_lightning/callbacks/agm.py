"""AGM: adaptive gradient modulation from Shapley mono-modal responses (Li et al., ICCV 2023).

Follows the official code (lihong2303/AGM_ICCV2023, commit 5a65542, ``model/CREMAD_net.py``
``GradMod`` and ``run/CREMAD_main.py`` lines 44-244) by default; ``docs/baselines.md`` lists what each
option changes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.utils.hooks import RemovableHandle

from pdmp_lightning.batch import BatchKey
from pdmp_lightning.callbacks.balancing import BalancingCallback
from pdmp_lightning.errors import config_error
from pdmp_lightning.fusion_access import HeadSpec
from pdmp_lightning.modality import ModalitySpecInput
from pdmp_lightning.modulation.capture import first_tensor
from pdmp_lightning.modulation.coefficients import check_gamma
from pdmp_lightning.modulation.mechanisms import MECHANISMS, at_least_float32
from pdmp_lightning.types import NonNegativeInt, PositiveFloat, PositiveInt

#: How AGM's coefficients act: ``"responses"`` as the official code, or a library mechanism on the encoders.
AGMMechanism = Literal["responses", "auto", "activation", "parameter", "grad", "update"]
#: What a masked pass zeroes: the modality's encoder *inputs* (official) or its *features*.
Masking = Literal["inputs", "features"]

#: The official floor of the true-class probability in the scores (``run/CREMAD_main.py`` line 133).
PROBABILITY_FLOOR = 1e-8


def shapley_weights(names: Sequence[str]) -> dict[str, dict[frozenset[str], float]]:
    """Each modality's Shapley response as a combination of the subset values ``F(S)``, empty set left out.

    ``o_m = sum_S w_m(S) F(S)`` with ``F(S)`` the fused logits with the modalities outside ``S``
    masked; the empty set's weight is 0 for every modality (it cancels), so it is never computed.
    With two modalities, ``o_a = (F(a, v) - F(0, v) + F(a, 0)) / 2`` (the official ``Modality_Audio``).

    Examples:
        >>> weights = shapley_weights(["a", "v"])["a"]
        >>> {"".join(sorted(s)): w for s, w in weights.items()}
        {'a': 0.5, 'av': 0.5, 'v': -0.5}
    """
    count = len(names)

    def share(size: int) -> float:
        return math.factorial(size) * math.factorial(count - size - 1) / math.factorial(count)

    weights: dict[str, dict[frozenset[str], float]] = {}
    for modality in names:
        others = [m for m in names if m != modality]
        combination: dict[frozenset[str], float] = {}
        for size in range(count):
            for subset in itertools.combinations(others, size):
                base = frozenset(subset)
                combination[base | {modality}] = combination.get(base | {modality}, 0.0) + share(size)
                if base:
                    combination[base] = combination.get(base, 0.0) - share(size)
        weights[modality] = combination
    return weights


def shapley_outputs(value: Callable[[frozenset[str]], Tensor], names: Sequence[str]) -> dict[str, Tensor]:
    """Each modality's mono-modal response ``o_m`` from the subset values; they add up to ``F(all)``.

    Args:
        value: Subset of modalities kept -> the fused logits with the others masked.
        names: The modalities.
    """
    cache: dict[frozenset[str], Tensor] = {}
    outputs = {}
    for modality, combination in shapley_weights(names).items():
        terms = []
        for subset, weight in sorted(combination.items(), key=lambda item: (-len(item[0]), sorted(item[0]))):
            if subset not in cache:
                cache[subset] = value(subset)
            terms.append(weight * cache[subset])
        outputs[modality] = torch.stack(terms).sum(dim=0)
    return outputs


def agm_scores(outputs: Mapping[str, Tensor], labels: Tensor) -> dict[str, Tensor]:
    """``s_m`` = the batch mean of ``-log p_m(y)``, ``p`` floored at 1e-8 as in the official code."""
    scores = {}
    for modality, logits in outputs.items():
        probability = at_least_float32(logits).softmax(dim=1).gather(1, labels[:, None]).squeeze(1)
        scores[modality] = -probability.clamp_min(PROBABILITY_FLOOR).log().mean()
    return scores


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; the gradient times a constant (the official ``Modality_out`` backward hooks)."""

    @staticmethod
    def forward(ctx: Any, values: Tensor, factor: float) -> Tensor:
        ctx.factor = factor
        return values.view_as(values)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.factor, None


def agm_ratios(scores: Mapping[str, float]) -> dict[str, float]:
    """``r_m = exp(mean_{j != m} s_j - s_m)`` from cross-entropy scores (``exp(s_v - s_a)`` for two).

    A modality whose responses fit the labels better than the others' has ``r > 1``. Applied to the
    running means of the scores it gives the official "optimal" ratio ``r_bar``.
    """
    ratios = {}
    for modality, score in scores.items():
        others = [s for m, s in scores.items() if m != modality]
        ratios[modality] = exp_or_inf(sum(others) / len(others) - score)
    return ratios


def exp_or_inf(value: float) -> float:
    """``exp(value)``, ``inf`` where it overflows (as the official code's tensors do) instead of raising.

    Diverging scores (a learning rate far too high) drive the ratio past float range; an infinite
    ratio gives that modality a coefficient of 0 in ``agm_coefficients``.
    """
    try:
        return math.exp(value)
    except OverflowError:
        return math.inf


def agm_coefficients(ratios: Mapping[str, float], averages: Mapping[str, float], alpha: float) -> dict[str, float]:
    """``c_m = exp(alpha * min(r_bar_m - r_m, 10))``: below 1 for a modality ahead of its running-mean ratio.

    Examples:
        >>> ratios = {"audio": 2.0, "visual": 0.5}
        >>> agm_coefficients(ratios, {"audio": 1.0, "visual": 1.0}, alpha=1.0)
        {'audio': 0.36787944117144233, 'visual': 1.6487212707001282}
    """
    return {m: math.exp(alpha * min(averages[m] - r, 10.0)) for m, r in ratios.items()}


@contextmanager
def evaluation_mode(module: nn.Module) -> Iterator[None]:
    """Puts every submodule in eval mode (batch norm uses running statistics) and restores each one's flag."""
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield
    finally:
        for submodule, training in modes.items():
            submodule.training = training


class AGMCallback(BalancingCallback):
    """AGM: scales each modality's response by how far its fit runs ahead of its running mean.

    Each training forward, where the model's fused logits come out (the named ``head``, or the
    module's ``fusion``), the mono-modal responses ``o_m`` are formed from the fused logits ``F(a, v)``
    and masked passes (``o_a = (F(a, v) - F(0, v) + F(a, 0)) / 2``; exact Shapley values for more
    modalities). A masked pass reruns the model's forward (the smallest submodule that calls every
    encoder and the head) in eval mode with that modality's encoder inputs zeroed, keeping the graph.
    The scores ``s_m`` (batch mean of ``-log p_m(y)``, ``p`` floored at 1e-8, averaged over processes)
    give ``r_m = exp(mean_{j != m} s_j - s_m)``, and the running means of the scores since the start of
    training (from 0) give ``r_bar_m`` alike; ``c_m = exp(alpha * min(r_bar_m - r_m, 10))`` suppresses a
    modality ahead of its running mean and boosts one behind. The training logits become
    ``o_a + o_v`` (equal in value) with the gradient flowing into ``o_m`` multiplied by ``c_m``, so the
    encoder, the masked passes and the head's share of that modality are all scaled. After backward,
    if an element of the head's weight gradient exceeds 1 in magnitude, the total gradient norm is
    clipped to 1. All of this is the official code's training step; the running means are saved in
    checkpoints.

    Args:
        modalities: Modality -> encoder submodule path.
        alpha: Modulation strength (1.5 for CREMA-D in the paper).
        clip_fusion_gradient: Apply the clip described above.
        masking: ``"inputs"`` (official): zero the encoder's inputs and rerun the forward;
            ``"features"``: zero the modality's features and rerun only the fusion (cheaper: no
            encoder reruns, but an encoder's response to a zero input is not zero in general).
        features: Modality -> submodule whose output are its features (``masking="features"``
            without ``head``; default: the modality's path).
        head: The model's final linear layer, a concat head (e.g. ``"model.fusion_module.fc_out"``):
            the fused logits are its output, nothing is asked of the model. None: the module's
            ``fusion`` (see ``pdmp_lightning.protocol``).
        head_widths: Each modality's input columns of ``head`` (default: equal).
        target: Batch key or index of the labels.
        start_epoch: First modulated epoch.
        end_epoch: First epoch after the window (exclusive), or None (the paper: all epochs).
        mechanism: ``"responses"`` (official, described above), or a library mechanism
            (``"auto"``, ``"activation"``, ``"parameter"``, ``"grad"``, ``"update"``) that applies
            ``c_m`` to the encoders' parameters only and leaves the logits as they are.
        log_every_n_steps: Interval of the logs (``agm/coefficient/*``, ``agm/score/*``, ...).

    Examples:
        >>> modalities = {"audio": "encoders.audio", "visual": "encoders.visual"}
        >>> callback = AGMCallback(modalities, alpha=1.5)
        >>> callback.mechanism, callback.masking
        ('responses', 'inputs')
    """

    required = ("fuse", "fusion")

    def __init__(
        self,
        modalities: Mapping[str, ModalitySpecInput],
        alpha: PositiveFloat = 1.5,
        clip_fusion_gradient: bool = True,
        masking: Masking = "inputs",
        features: Mapping[str, str] | None = None,
        head: HeadSpec | None = None,
        head_widths: Mapping[str, int] | None = None,
        target: BatchKey = "label",
        start_epoch: NonNegativeInt = 0,
        end_epoch: PositiveInt | None = None,
        mechanism: AGMMechanism = "responses",
        log_every_n_steps: NonNegativeInt | None = None,
    ) -> None:
        if mechanism != "responses" and mechanism not in MECHANISMS:
            raise config_error("mechanism", mechanism, f"'responses' (the official way) or one of {list(MECHANISMS)}")
        if masking not in ("inputs", "features"):
            raise config_error("masking", masking, "'inputs' (official) or 'features'")
        super().__init__(
            modalities,
            features=features,
            head=head,
            head_widths=head_widths,
            target=target,
            start_epoch=start_epoch,
            end_epoch=end_epoch,
            mechanism="auto" if mechanism == "responses" else mechanism,
            log_every_n_steps=log_every_n_steps,
            log_prefix="agm",
        )
        self.alpha = check_gamma("alpha", alpha)
        self.clip_fusion_gradient = bool(clip_fusion_gradient)
        self.masking: Masking = masking
        self.mechanism: AGMMechanism = mechanism  # type: ignore[assignment]
        self.needs_features = masking == "features"
        #: Running means of the scores since training started (official: from 0), and their count.
        self.score_means: dict[str, float] = {}
        self.steps = 0
        self.last: dict[str, float] = {}
        self._fused: nn.Module | None = None
        self._encoders: dict[str, nn.Module] = {}
        self._outer: nn.Module | None = None
        self._outer_path = ""
        self._outer_call: tuple[tuple[Any, ...], dict[str, Any]] | None = None
        self._handles: list[RemovableHandle] = []
        self._zeroed: frozenset[str] = frozenset()
        self._rerunning = False
        self._rerun_output: Tensor | None = None
        self._responded = False
        self._trainer: pl.Trainer | None = None

    # --- where AGM reaches the model ----------------------------------------------------------------

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        self._trainer = trainer
        self._fused = self.access.fused_module(type(self).__name__)
        if self.masking == "inputs":
            self._encoders = {m: self._encoder(m) for m in self.modality_names}
            self._outer_path = _enclosing_path(pl_module, [*self._encoders.values(), self._fused])
            self._outer = pl_module.get_submodule(self._outer_path)

    def _encoder(self, modality: str) -> nn.Module:
        group = self.groups[modality]
        if len(group.modules) != 1:
            raise config_error(
                f"modalities[{modality!r}]",
                list(group.module_paths) or "a 're:' pattern",
                "one submodule path with masking='inputs': AGM zeroes that encoder's inputs in its masked passes",
                "name the encoder by its path, or use masking='features'.",
            )
        return group.modules[0]

    def _resolve_mechanism(self, trainer: pl.Trainer) -> str:
        if self.mechanism == "responses":
            self._check_strategy(trainer)
            return "responses"
        return super()._resolve_mechanism(trainer)

    def _check_strategy(self, trainer: pl.Trainer) -> None:
        self._refuse_sharded(
            trainer,
            "AGMCallback",
            "its masked passes rerun parts of the model inside its own forward, and it scores the responses "
            "where FSDP holds the weights sharded; use DDP.",
        )
        super()._check_strategy(trainer)

    def _activate(self, trainer: pl.Trainer) -> None:
        super()._activate(trainer)
        assert self._fused is not None
        self._handles.append(self._fused.register_forward_hook(self._respond))
        if self._outer is not None:
            self._handles.append(self._outer.register_forward_pre_hook(self._remember_call, with_kwargs=True))
            for modality, encoder in self._encoders.items():
                self._handles.append(encoder.register_forward_pre_hook(self._zero_inputs(modality), with_kwargs=True))

    def _detach(self) -> None:
        super()._detach()
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._outer_call = None

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
        self._responded = False

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        if self.is_modulating and not self._responded:
            raise config_error(
                "head" if self.head is not None else "fusion",
                f"{type(self._fused).__name__}, not called in this training step",
                "the module that outputs the fused logits called in the training forward",
                "AGM forms the modalities' responses where the fused logits come out; without that call the "
                "step would train as if AGM were not there.",
            )
        self._outer_call = None
        super().on_before_backward(trainer, pl_module, loss)

    # --- the official step ------------------------------------------------------------------------

    def _remember_call(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if not self._rerunning and module.training and torch.is_grad_enabled():
            self._outer_call = (args, kwargs)

    def _zero_inputs(self, modality: str) -> Callable[..., Any]:
        def pre_hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if not (self._rerunning and modality in self._zeroed):
                return None
            zero = lambda value: torch.zeros_like(value) if isinstance(value, Tensor) else value  # noqa: E731
            return tuple(zero(a) for a in args), {k: zero(v) for k, v in kwargs.items()}

        return pre_hook

    def _respond(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        if self._rerunning:
            self._rerun_output = first_tensor(output)
            return None
        if not (module.training and torch.is_grad_enabled()):
            return None
        self._responded = True
        fused = first_tensor(output)
        labels = self.labels()
        if fused.shape[0] != labels.shape[0]:
            raise config_error(
                "head" if self.head is not None else "fusion",
                f"fused logits of shape {tuple(fused.shape)}",
                f"one row per sample ({labels.shape[0]} labels in this batch)",
                "name the layer that outputs the class logits.",
            )
        everything = frozenset(self.modality_names)
        keep_graph = self.mechanism == "responses"
        with torch.set_grad_enabled(keep_graph):
            value = lambda kept: fused if kept == everything else self._masked(kept)  # noqa: E731
            outputs = shapley_outputs(value, self.modality_names)
        local = agm_scores({m: o.detach() for m, o in outputs.items()}, labels)
        assert self._trainer is not None
        coefficients = self.step(self.reduce(self._trainer, local, op="mean"))
        self._coefficients.update(coefficients)
        if not keep_graph:
            return None
        scaled = [_ScaleGradient.apply(outputs[m], coefficients[m]) for m in self.modality_names]
        logits = scaled[0]
        for other in scaled[1:]:
            logits = logits + other
        return _replace_first(output, logits)

    def _masked(self, kept: frozenset[str]) -> Tensor:
        """The fused logits with the modalities outside ``kept`` masked, the whole model in eval mode."""
        self._rerunning, self._rerun_output = True, None
        try:
            if self.masking == "features":
                features = self.access.features()
                masked = {m: f if m in kept else torch.zeros_like(f) for m, f in features.items()}
                assert self._trainer is not None
                with evaluation_mode(self._trainer.lightning_module):
                    return self.access.fuse(masked)
            if self._outer_call is None:
                raise config_error(
                    "masking",
                    "inputs",
                    f"a training forward that calls {_call_of(self._outer_path)}, which AGM reruns with a modality's "
                    "encoder inputs zeroed",
                    "call that module in training_step (e.g. logits = self.model(...) or self(batch)), or use "
                    "masking='features'.",
                )
            self._zeroed = frozenset(self.modality_names) - kept
            args, kwargs = self._outer_call
            assert self._outer is not None
            with evaluation_mode(self._outer):
                self._outer(*args, **kwargs)
            if self._rerun_output is None:
                raise RuntimeError("AGM's masked pass did not reach the module that outputs the fused logits")
            return self._rerun_output
        finally:
            self._rerunning, self._zeroed, self._rerun_output = False, frozenset(), None

    def step(self, scores: Mapping[str, float]) -> dict[str, float]:
        """This step's coefficients from the modalities' scores; then the running means take the scores in.

        Examples:
            >>> agm = AGMCallback({"a": "enc_a", "v": "enc_v"}, alpha=1.0)
            >>> agm.step({"a": 1.0, "v": 1.0})  # the running means start at 0: r_bar = 1 = r
            {'a': 1.0, 'v': 1.0}
            >>> # a fits far better than its mean so far
            >>> coefficients = agm.step({"a": 0.0, "v": 2.0})
            >>> coefficients["a"] < 1.0 < coefficients["v"], agm.steps, agm.score_means
            (True, 2, {'a': 0.5, 'v': 1.5})
        """
        ratios = agm_ratios(scores)
        optimal = agm_ratios({m: self.score_means.get(m, 0.0) for m in scores})
        coefficients = agm_coefficients(ratios, optimal, self.alpha)
        iteration = self.steps + 1
        self.score_means = {
            m: self.score_means.get(m, 0.0) * (iteration - 1) / iteration + s / iteration for m, s in scores.items()
        }
        self.steps = iteration
        self.last = {f"score/{m}": s for m, s in scores.items()} | {f"ratio/{m}": r for m, r in ratios.items()}
        return coefficients

    def _after_step_modulation(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer) -> None:
        if not (self.clip_fusion_gradient and self.is_modulating):
            return
        grads = [w.grad for w in self.access.fused_weights() if w.grad is not None]
        if grads and any(bool((g.abs() > 1).any()) for g in grads):
            parameters = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(parameters, max_norm=1.0)
            self.last["fusion_clipped"] = 1.0
        else:
            self.last["fusion_clipped"] = 0.0

    def _method_metrics(self) -> dict[str, float | Tensor]:
        return {f"agm/{name}": value for name, value in self.last.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"score_means": dict(self.score_means), "steps": self.steps, "modalities": self.modality_names}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if sorted(state_dict.get("modalities", [])) != sorted(self.modality_names) or "score_means" not in state_dict:
            rank_zero_warn(
                f"AGMCallback: the checkpoint's AGM state ({sorted(state_dict)}, modalities "
                f"{state_dict.get('modalities')}) is not running score means for {self.modality_names} (0.1 "
                "checkpoints kept ratio sums); the running means start again from 0."
            )
            return
        self.score_means = dict(state_dict["score_means"])
        self.steps = int(state_dict["steps"])


def _replace_first(output: Any, logits: Tensor) -> Any:
    if isinstance(output, tuple):
        return (logits, *output[1:])
    if isinstance(output, list):
        return [logits, *output[1:]]
    return logits


def _enclosing_path(root: nn.Module, modules: Sequence[nn.Module]) -> str:
    """The path of the deepest submodule of ``root`` that contains all ``modules`` ("": ``root``)."""
    names = {id(module): name for name, module in root.named_modules()}
    paths = [names[id(m)].split(".") if names[id(m)] else [] for m in modules]
    common: list[str] = []
    for parts in zip(*paths, strict=False):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    while common and root.get_submodule(".".join(common)) in modules:
        common.pop()
    return ".".join(common)


def _call_of(path: str) -> str:
    """How a training step calls the submodule at ``path``, for messages."""
    return f"`self.{path}(...)`" if path else "the LightningModule itself (`self(...)`)"
