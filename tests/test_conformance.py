"""The baselines against their official training steps (``tests/references``), in float64, step by step.

Each test trains identical copies of one model on identical batches, once with the library's callback
under Lightning and once with the transplanted official loop, and compares every parameter and
buffer (batch-norm running statistics included) after several steps.
"""

from __future__ import annotations

import copy
import re
import warnings
from types import SimpleNamespace
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from pdmp_lightning import AGMCallback, MMParetoCallback, OGMGECallback, OPMCallback, PDMPConfigurationError
from pdmp_lightning.data import TensorMultimodalDataset
from pdmp_lightning.models import ConvEncoder, MLPEncoder, MultimodalClassifier
from tests import avclassifier
from tests.helpers import trainer
from tests.references import agm, mmpareto, ogm_ge, opm

STEPS, BATCH, CLASSES = 6, 8, 4
OPTIMIZERS = {
    # The official OGM-GE recipe's SGD (lr 1e-3 there; larger here so that 6 steps move the weights visibly).
    "sgd": lambda parameters: torch.optim.SGD(parameters, lr=0.05, momentum=0.9, weight_decay=1e-4),
    "adamw": lambda parameters: torch.optim.AdamW(parameters, lr=1e-2, weight_decay=0.01),
}


def conv_model(optimizer: str) -> MultimodalClassifier:
    """The official AVClassifier's shape at a small size: two conv nets (pooled) and a concat head."""
    torch.manual_seed(0)
    encoders = {m: ConvEncoder(1, [4, 8], 8) for m in ("audio", "visual")}
    model = MultimodalClassifier(encoders, num_classes=CLASSES, optimizer=OPTIMIZERS[optimizer])
    return model.double()


def loader() -> DataLoader[Any]:
    generator = torch.Generator().manual_seed(1)
    count = STEPS * BATCH
    labels = torch.randint(0, CLASSES, (count,), generator=generator)
    audio = torch.randn(count, 1, 8, 8, generator=generator, dtype=torch.float64)
    visual = torch.randn(count, 1, 8, 8, generator=generator, dtype=torch.float64)
    visual[torch.arange(count), 0, labels, labels] += 3.0  # visual is the stronger modality: it gets suppressed
    return DataLoader(TensorMultimodalDataset({"audio": audio, "visual": visual}, labels), batch_size=BATCH)


def conv_weights(model: torch.nn.Module) -> dict[str, str]:
    """Each modality's 4-D weights, as the official code selects them, as an exact ``re:`` pattern."""
    names = {
        m: [n for n, p in model.named_parameters() if m in n.split(".")[1] and p.dim() == 4]
        for m in ("audio", "visual")
    }
    return {m: "re:^(" + "|".join(re.escape(n) for n in found) + ")$" for m, found in names.items()}


@pytest.fixture
def fixed_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    """``normal_`` fills a fixed pattern: the official global-generator draws and the callback's seeded ones agree."""

    def normal_(self: Tensor, mean: float = 0.0, std: float = 1.0, *, generator: Any = None) -> Tensor:
        pattern = torch.linspace(-1.7, 1.3, self.numel(), dtype=self.dtype).reshape(self.shape)
        return self.copy_(mean + std * pattern)

    monkeypatch.setattr(torch.Tensor, "normal_", normal_)


def with_callback(model: MultimodalClassifier, callback: pl.Callback) -> MultimodalClassifier:
    model = copy.deepcopy(model)
    batches = loader()
    trainer(callbacks=[callback], max_steps=STEPS, limit_val_batches=0).fit(
        model, train_dataloaders=batches, val_dataloaders=batches
    )
    return model


def official(model: MultimodalClassifier, optimizer: str, **kwargs: Any) -> tuple[MultimodalClassifier, list[Any]]:
    model = copy.deepcopy(model)
    coefficients = ogm_ge.train_steps(model, loader(), OPTIMIZERS[optimizer](model.parameters()), **kwargs)
    return model, coefficients


def assert_same_state(model: torch.nn.Module, reference: torch.nn.Module) -> None:
    expected = reference.state_dict()
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=1e-12, atol=1e-14, msg=name)


@pytest.mark.usefixtures("fixed_noise")
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize("modulation", ["OGM_GE", "OGM"])
def test_ogm_ge_equals_the_official_step(optimizer: str, modulation: str) -> None:
    model = conv_model(optimizer)
    callback = OGMGECallback(
        conv_weights(model),
        alpha=0.8,
        generalization_enhancement=modulation == "OGM_GE",
        features={"audio": "encoders.audio", "visual": "encoders.visual"},
        mechanism="grad",  # the official code scales gradients, whatever the optimizer
    )
    if optimizer == "adamw":
        with pytest.warns(UserWarning, match="normalise the gradient's scale away"):
            modulated = with_callback(model, callback)
    else:
        modulated = with_callback(model, callback)
    reference, coefficients = official(model, optimizer, alpha=0.8, modulation=modulation)
    assert any(min(pair) < 0.9 for pair in coefficients)  # the modulation did act
    assert_same_state(modulated, reference)


@pytest.mark.usefixtures("fixed_noise")
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_ogm_ge_with_head_equals_the_official_step_on_the_avclassifier(optimizer: str) -> None:
    """The official model shape (frames folded into the batch, ``fusion_module(a, v)``), reached by ``head=`` only."""
    module = avclassifier.av_module(OPTIMIZERS[optimizer])
    callback = OGMGECallback(conv_weights(module), alpha=0.8, head=avclassifier.HEAD, mechanism="grad")
    modulated = copy.deepcopy(module)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "mechanism='grad' scales gradients")  # AdamW: the official choice
        trainer(callbacks=[callback], max_steps=STEPS, limit_val_batches=0).fit(
            modulated, train_dataloaders=avclassifier.av_loader(STEPS, BATCH)
        )
    reference = copy.deepcopy(module)
    fc_out = reference.model.fusion_module.fc_out
    coefficients = ogm_ge.train_steps(
        reference,
        avclassifier.av_loader(STEPS, BATCH),
        OPTIMIZERS[optimizer](reference.parameters()),
        alpha=0.8,
        features=reference.model.features,
        fc_out=fc_out,
    )
    assert any(min(pair) < 0.9 for pair in coefficients)
    assert_same_state(modulated, reference)


@pytest.mark.usefixtures("fixed_noise")
def test_ogm_ge_under_update_uses_each_steps_own_coefficient() -> None:
    """``mechanism="update"`` (the AdamW default): the official coefficient of *this* step scales its update."""
    model = conv_model("adamw")
    callback = OGMGECallback(
        conv_weights(model), alpha=0.8, features={"audio": "encoders.audio", "visual": "encoders.visual"}
    )
    modulated = with_callback(model, callback)
    assert callback.mechanism_in_use == "update"
    reference, coefficients = official(model, "adamw", alpha=0.8, update_rates=True)
    assert coefficients[0] != (1.0, 1.0) and len({pair for pair in coefficients}) == STEPS  # new every step
    assert_same_state(modulated, reference)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_mmpareto_equals_the_official_step(optimizer: str) -> None:
    torch.manual_seed(0)
    encoders = {m: ConvEncoder(1, [4, 8], 8) for m in ("audio", "visual")}
    model = MultimodalClassifier(
        encoders, num_classes=CLASSES, unimodal_heads=True, unimodal_loss_weight=1.0, optimizer=OPTIMIZERS[optimizer]
    ).double()
    modulated = with_callback(model, MMParetoCallback({"audio": "encoders.audio", "visual": "encoders.visual"}))
    reference = copy.deepcopy(model)
    cosines = mmpareto.train_steps(reference, loader(), OPTIMIZERS[optimizer](reference.parameters()))
    assert any(min(pair) < 0 for pair in cosines)  # a conflict: the min-norm solver decided at least one step
    assert_same_state(modulated, reference)


def opm_setup(kind: str, optimizer: str) -> tuple[pl.LightningModule, DataLoader[Any], dict[str, Any], Any]:
    """The model, its batches (two per epoch), the callback's model arguments and the reference's ``features``/head."""
    if kind == "av_head":
        module = avclassifier.av_module(OPTIMIZERS[optimizer])
        arguments = {"modalities": avclassifier.MODALITIES, "head": avclassifier.HEAD}
        return (
            module,
            avclassifier.av_loader(2, BATCH),
            arguments,
            lambda m: (m.model.features, m.model.fusion_module.fc_out),
        )
    torch.manual_seed(0)
    encoders = {m: MLPEncoder(in_features=16, hidden=[8], out_features=8) for m in ("audio", "visual")}
    model = MultimodalClassifier(encoders, num_classes=CLASSES, optimizer=OPTIMIZERS[optimizer]).double()
    generator = torch.Generator().manual_seed(2)
    count = 2 * BATCH
    labels = torch.randint(0, CLASSES, (count,), generator=generator)
    audio = torch.randn(count, 16, generator=generator, dtype=torch.float64)
    audio[torch.arange(count), labels] += 2.0  # audio is the stronger modality: its features get dropped
    visual = torch.randn(count, 16, generator=generator, dtype=torch.float64)
    batches = DataLoader(TensorMultimodalDataset({"audio": audio, "visual": visual}, labels), batch_size=BATCH)
    arguments: dict[str, Any] = {"modalities": {"audio": "encoders.audio", "visual": "encoders.visual"}}
    if kind == "mlp_head":
        arguments["head"] = "fusion.head"
    return model, batches, arguments, lambda m: (None, None)


@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad=True to a scalar")  # the original's
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize(
    ("kind", "q_gradient"), [("protocol", False), ("mlp_head", True), ("av_head", False), ("av_head", True)]
)
def test_opm_equals_the_official_step(optimizer: str, kind: str, q_gradient: bool) -> None:
    """Equal to the official step, its gradient through ``theta -> q`` cut (default) or kept (``q_gradient``)."""
    model, batches, arguments, official_parts = opm_setup(kind, optimizer)
    epochs = 8  # the official warm-up is epochs 0-5: 4 modulated steps
    callback = OPMCallback(**arguments, p_exe=0.9, q_gradient=q_gradient)
    modulated = copy.deepcopy(model)
    trainer(callbacks=[callback], max_steps=-1, max_epochs=epochs, limit_val_batches=0).fit(
        modulated, train_dataloaders=batches, **({} if kind == "av_head" else {"val_dataloaders": batches})
    )

    # The callback's own per-step generators, handed to the official code in place of its global draws.
    step = {"now": 0}

    def at(now: int) -> Any:
        return SimpleNamespace(global_step=now, global_rank=0)

    def execute_draw() -> float:
        # float64: the callback draws inside the forward, where Lightning's 64-true sets the default dtype.
        execute = callback.step_generator(at(step["now"]), torch.device("cpu"))
        return 1.0 - float(torch.rand((), generator=execute, dtype=torch.float64))

    def keep_draw(q: Tensor, size: int) -> Tensor:
        drop = callback.step_generator(at(step["now"]), torch.device("cpu"), per_rank=True, stream="drop")
        uniform = torch.rand(size, generator=drop, dtype=torch.float64)
        keep = torch.stack([(uniform >= q[0]).double(), (uniform >= q[1]).double()], dim=1)
        return keep[:, None, :]  # [B, 1, 2], as Bernoulli(1 - q).sample([B, 1])

    def counted() -> Any:
        for batch in batches:
            yield batch
            step["now"] += 1

    def official(detach_q: bool) -> tuple[pl.LightningModule, list[Tensor]]:
        step["now"] = 0
        reference = copy.deepcopy(model)
        features, head = official_parts(reference)
        sgd_or_adamw = OPTIMIZERS[optimizer](reference.parameters())
        qs = []
        for epoch in range(epochs):
            qs += opm.train_steps(
                reference,
                counted(),
                sgd_or_adamw,
                epoch,
                execute_draw,
                keep_draw,
                p_exe=0.9,
                detach_q=detach_q,
                features=features,
                fxy=head,
            )
        return reference, qs

    reference, qs = official(detach_q=not q_gradient)
    assert len(qs) == 4 and all(sorted(float(x) > 0 for x in q) == [False, True] for q in qs)  # one drops, 4 steps
    assert_same_state(modulated, reference)
    other, _ = official(detach_q=q_gradient)
    with pytest.raises(AssertionError):  # the gradient through q does change the run
        assert_same_state(modulated, other)


def test_opm_q_gradient_needs_the_head() -> None:
    with pytest.raises(PDMPConfigurationError, match="`q_gradient`: got True; expected False, or True together"):
        OPMCallback({"audio": "encoders.audio", "visual": "encoders.visual"}, q_gradient=True)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_agm_equals_the_official_step(optimizer: str) -> None:
    """AGM's defaults on the official ``AVClassifier`` shape, named by ``head=`` only: the official step, exactly."""
    module = avclassifier.av_module(OPTIMIZERS[optimizer], gain=6.0)
    callback = AGMCallback(avclassifier.MODALITIES, alpha=1.5, head=avclassifier.HEAD)
    clipped: list[float] = []

    class ClipRecorder(pl.Callback):
        def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
            clipped.append(callback.last["fusion_clipped"])

    modulated = copy.deepcopy(module)
    trainer(callbacks=[callback, ClipRecorder()], max_steps=STEPS, limit_val_batches=0).fit(
        modulated, train_dataloaders=avclassifier.av_loader(STEPS, BATCH)
    )
    assert callback.mechanism_in_use == "responses"
    reference = copy.deepcopy(module)
    sgd_or_adamw = OPTIMIZERS[optimizer](reference.parameters())
    loader = avclassifier.av_loader(STEPS, BATCH)
    coefficients, means = agm.train_steps(reference.model, loader, sgd_or_adamw, alpha=1.5)
    assert len({pair for pair in coefficients}) == STEPS and any(abs(c - 1) > 0.02 for p in coefficients for c in p)
    if optimizer == "sgd":
        assert 0 < sum(clipped) < STEPS  # the official clip acted on some steps, not on all
    assert callback.steps == STEPS
    assert callback.score_means == pytest.approx(dict(zip(("audio", "visual"), means, strict=True)), rel=1e-12)
    assert_same_state(modulated, reference)
