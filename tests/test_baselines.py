"""OGM-GE, OPM, AGM and MMPareto: each formula on a hand-computed case, and each callback end to end."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor

from pdmp_lightning import (
    AGMCallback,
    MMParetoCallback,
    OGMGECallback,
    OPMCallback,
    PDMPConfigurationError,
)
from pdmp_lightning.callbacks.agm import agm_coefficients, agm_ratios, shapley_outputs
from pdmp_lightning.callbacks.mmpareto import mmpareto_gradients, pareto_weights
from pdmp_lightning.callbacks.ogm_ge import ogm_coefficients
from pdmp_lightning.callbacks.opm import drop_features, drop_probability
from pdmp_lightning.data import SyntheticMultimodalDataModule
from pdmp_lightning.models import MLPEncoder, MultimodalClassifier, build_fusion
from tests.helpers import MultiplierHistory, TwoModalityModel, trainer

MODALITIES = {"audio": "encoders.audio", "visual": "encoders.visual"}


def model(**kwargs: Any) -> MultimodalClassifier:
    torch.manual_seed(0)
    encoders = {m: MLPEncoder(in_features=16, hidden=[8], out_features=8) for m in ("audio", "visual")}
    kwargs.setdefault("optimizer", lambda params: torch.optim.SGD(params, lr=0.1))
    return MultimodalClassifier(encoders, num_classes=4, modalities=["audio", "visual"], **kwargs)


def data(**kwargs: Any) -> SyntheticMultimodalDataModule:
    return SyntheticMultimodalDataModule(num_samples=kwargs.pop("num_samples", 160), batch_size=16, **kwargs)


def first_batch() -> dict[str, Tensor]:
    batch: dict[str, Tensor] = next(iter(fixed_loaders()["train_dataloaders"]))
    return batch


def fixed_loaders() -> dict[str, torch.utils.data.DataLoader[Any]]:
    """The train split without shuffling, and a validation loader the runs skip (limit_val_batches=0)."""
    source = data()
    source.setup()
    train = torch.utils.data.DataLoader(source.splits["train"], batch_size=16, shuffle=False)
    return {"train_dataloaders": train, "val_dataloaders": source.val_dataloader()}


def one_step(callback: pl.Callback | None, module: MultimodalClassifier, **kwargs: Any) -> dict[str, Tensor]:
    """Parameter deltas after one optimizer step on the first train batch (float64, no shuffling)."""
    module = copy.deepcopy(module)
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    options: dict[str, Any] = {"max_steps": 1, "precision": "64-true", "limit_val_batches": 0, **kwargs}
    trainer(callbacks=[callback] if callback else [], **options).fit(module, **fixed_loaders())
    return {n: p.detach() - before[n] for n, p in module.named_parameters()}


# --- OGM-GE -------------------------------------------------------------------------------------


def test_ogm_suppresses_only_the_stronger_modality() -> None:
    assert ogm_coefficients({"audio": 3.0, "visual": 1.0}, alpha=0.5) == {
        "audio": pytest.approx(1 - math.tanh(1.5)),
        "visual": 1.0,
    }
    assert ogm_coefficients({"audio": 1.0, "visual": 4.0}, alpha=0.8)["visual"] == pytest.approx(1 - math.tanh(3.2))
    # Three modalities: each compared with the mean of the others.
    three = ogm_coefficients({"a": 4.0, "b": 2.0, "c": 2.0}, alpha=1.0)
    assert three == {"a": pytest.approx(1 - math.tanh(2.0)), "b": 1.0, "c": 1.0}


def test_ogm_step_scales_the_stronger_encoder_by_the_hand_computed_coefficient() -> None:
    module = model()
    batch = first_batch()
    with torch.no_grad():
        reference = copy.deepcopy(module).double()
        features = reference.encode({k: v.double() if v.is_floating_point() else v for k, v in batch.items()})
        weight, bias = reference.fusion.head.weight, reference.fusion.head.bias
        shares = {
            "audio": features["audio"] @ weight[:, :8].T + bias / 2,
            "visual": features["visual"] @ weight[:, 8:].T + bias / 2,
        }
        scores = {m: float(s.softmax(1).gather(1, batch["label"][:, None]).sum()) for m, s in shares.items()}
    stronger = max(scores, key=lambda m: scores[m])
    weaker = next(m for m in scores if m != stronger)
    expected = 1 - math.tanh(0.8 * scores[stronger] / scores[weaker])

    callback = OGMGECallback(MODALITIES, alpha=0.8, generalization_enhancement=False)
    modulated, plain = one_step(callback, module), one_step(None, module)
    assert callback.scores == pytest.approx(scores)
    for name, delta in plain.items():
        k = expected if name.startswith(f"encoders.{stronger}") else 1.0
        torch.testing.assert_close(modulated[name], delta * k, rtol=1e-6, atol=1e-12, msg=name)


class GradientRecorder(pl.Callback):
    """Copies the gradients the optimizer is about to use (after every earlier callback)."""

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        self.grads = {n: p.grad.clone() for n, p in pl_module.named_parameters() if p.grad is not None}


def test_ge_noise_has_the_spread_of_the_unmodulated_gradient_and_is_reproducible() -> None:
    module = model()
    module.encoders["visual"] = MLPEncoder(in_features=16, hidden=[512], out_features=8)  # a big tensor to measure
    module.encoders["visual"].double()
    runs = []
    for enhancement in (False, True, True):
        recorder = GradientRecorder()
        callback = OGMGECallback(MODALITIES, generalization_enhancement=enhancement, seed=3)
        one_step_with(callback, recorder, module)
        runs.append((recorder.grads, callback.coefficients["visual"]))
    (clean, k), (noisy, _), (again, _) = runs
    name = "encoders.visual.net.0.weight"
    noise = noisy[name] - clean[name]
    raw_std = float((clean[name] / k).std())
    assert float(noise.std()) == pytest.approx(raw_std, rel=0.05)
    assert abs(float(noise.mean())) < 0.1 * raw_std
    torch.testing.assert_close(noisy[name], again[name], rtol=0, atol=0)  # same seed, same step: same noise
    for other in clean:
        if not other.startswith("encoders."):
            torch.testing.assert_close(noisy[other], clean[other], rtol=0, atol=0)  # the head gets no noise


def one_step_with(callback: pl.Callback, recorder: pl.Callback, module: MultimodalClassifier) -> None:
    run = trainer(callbacks=[callback, recorder], max_steps=1, precision="64-true", limit_val_batches=0)
    run.fit(copy.deepcopy(module), **fixed_loaders())


# --- OPM ----------------------------------------------------------------------------------------


def test_opm_drop_probability_rescaling_and_dropped_samples() -> None:
    assert drop_probability(1.0, 0.5, 0.5) == pytest.approx(0.5)
    assert drop_probability(3.0, 0.5, 0.5) == pytest.approx(0.5 * (1 + 0.5 * math.tanh(2.0)))
    assert drop_probability(50.0, 0.9, 1.0) == 1.0 and drop_probability(-50.0, 0.5, 2.0) == 0.0
    features = {"audio": torch.ones(1000, 6), "visual": torch.full((1000, 2), 2.0)}
    new, dropped, theta = drop_features(features, "audio", 0.4, torch.Generator().manual_seed(0))
    assert theta == pytest.approx(0.4 * 6 / 8)
    scale = 1 / (1 - theta)
    assert torch.all(new["audio"][dropped] == 0)
    torch.testing.assert_close(new["audio"][~dropped], torch.full_like(new["audio"][~dropped], scale))
    torch.testing.assert_close(new["visual"], torch.full_like(new["visual"], 2.0 * scale))
    assert 0.35 < float(dropped.float().mean()) < 0.45


class FusionInputs(pl.Callback):
    """Records what the fusion receives in training steps (registered after OPM's hook)."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seen: list[dict[str, Tensor]] = []
        pl_module.fusion.register_forward_pre_hook(lambda m, args: self.seen.append(args[0]) if m.training else None)


def test_opm_zeroes_the_stronger_modality_in_training_forwards_only() -> None:
    callback = OPMCallback(MODALITIES, start_epoch=0, p_exe=1.0, q_base=0.9, lam=0.0)
    inputs = FusionInputs()
    run = trainer(callbacks=[callback, inputs], max_steps=-1, max_epochs=1, precision="32-true")
    module = model()
    run.fit(module, datamodule=data(num_samples=200))
    zero_rows = [int((f[m].abs().sum(dim=1) == 0).sum()) for f in inputs.seen for m in f]
    assert sum(zero_rows) > 0.5 * 16 * len(inputs.seen)  # q = 0.9 of each batch for the stronger modality
    assert callback.last["drop_probability"] == pytest.approx(0.9)
    assert not any(h for h in module.fusion._forward_pre_hooks.values() if h.__qualname__.startswith("OPM"))


# --- AGM ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("names", [("a", "v"), ("a", "v", "d")])
def test_agm_shapley_outputs_sum_to_the_fused_logits(names: tuple[str, ...]) -> None:
    torch.manual_seed(0)
    fusion = build_fusion("film", dict.fromkeys(names, 5), num_classes=3, hidden=4)  # non-linear fusion
    features = {m: torch.randn(6, 5) for m in names}
    calls: list[frozenset[str]] = []

    def value(kept: frozenset[str]) -> Tensor:
        calls.append(kept)
        return fusion({m: f if m in kept else torch.zeros_like(f) for m, f in features.items()})

    outputs = shapley_outputs(value, names)
    assert frozenset() not in calls and len(calls) == len(set(calls)) == 2 ** len(names) - 1  # each subset once
    torch.testing.assert_close(sum(outputs.values()), fusion(features))
    if len(names) == 2:
        zero = {m: torch.zeros_like(f) for m, f in features.items()}
        both, only_v, only_a = (
            fusion(features),
            fusion({**zero, "v": features["v"]}),
            fusion({**zero, "a": features["a"]}),
        )
        torch.testing.assert_close(outputs["a"], (both - only_v + only_a) / 2)
        torch.testing.assert_close(outputs["v"], (both - only_a + only_v) / 2)


def test_agm_coefficient_moves_in_the_right_direction() -> None:
    # audio's loss is lower: ratio above 1.
    ratios = agm_ratios({"audio": 0.5, "visual": 1.5})
    assert ratios == {"audio": pytest.approx(math.e), "visual": pytest.approx(1 / math.e)}
    # audio is ahead of its running average: suppressed; visual is behind: boosted.
    coefficients = agm_coefficients(ratios, {"audio": 1.0, "visual": 1.0}, alpha=1.5)
    assert coefficients["audio"] < 1 < coefficients["visual"]
    assert coefficients["audio"] == pytest.approx(math.exp(1.5 * (1.0 - math.e)))
    assert agm_coefficients({"a": -100.0}, {"a": 100.0}, alpha=1.0) == {"a": pytest.approx(math.exp(10.0))}


def test_agm_diverged_scores_give_an_infinite_ratio_not_an_overflow_error() -> None:
    # A learning rate far too high: one modality's cross-entropy runs away (as happened at SGD 0.05 on mfeat_all).
    ratios = agm_ratios({"audio": 1.0, "visual": 2000.0})
    assert ratios == {"audio": math.inf, "visual": 0.0}
    assert agm_coefficients(ratios, {"audio": 1.0, "visual": 1.0}, alpha=1.5) == {
        "audio": 0.0,
        "visual": pytest.approx(math.exp(1.5)),
    }


def test_agm_running_means_of_the_scores_update_after_the_coefficients() -> None:
    agm = AGMCallback(MODALITIES, alpha=1.0)
    # The official running means start at 0: the first "optimal" ratio is exp(0 - 0) = 1.
    first = agm.step({"audio": 0.2, "visual": 1.0})
    assert first == {
        "audio": pytest.approx(math.exp(1.0 - math.exp(0.8))),
        "visual": pytest.approx(math.exp(1.0 - math.exp(-0.8))),
    }
    assert agm.score_means == {"audio": pytest.approx(0.2), "visual": pytest.approx(1.0)}
    ratios = agm_ratios({"audio": 0.5, "visual": 1.5})
    coefficients = agm.step({"audio": 0.5, "visual": 1.5})
    # The optimal ratio comes from the means of the *scores* before this step (not a mean of ratios).
    optimal = {"audio": math.exp(1.0 - 0.2), "visual": math.exp(0.2 - 1.0)}
    assert coefficients == {m: pytest.approx(math.exp(optimal[m] - ratios[m])) for m in ratios}
    assert agm.steps == 2 and agm.score_means == {"audio": pytest.approx(0.35), "visual": pytest.approx(1.25)}


@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")
def test_agm_running_averages_are_checkpointed(tmp_path: Path) -> None:
    callback = AGMCallback(MODALITIES)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    run = trainer(callbacks=[callback, checkpoint], max_steps=-1, max_epochs=1, enable_checkpointing=True)
    run.fit(model(), datamodule=data())
    assert callback.steps == 7  # 112 train samples, batches of 16
    saved = dict(callback.score_means)

    resumed = AGMCallback(MODALITIES)
    again = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    run = trainer(callbacks=[resumed, again], max_steps=-1, max_epochs=2, enable_checkpointing=True)
    run.fit(model(), datamodule=data(), ckpt_path=tmp_path / "last.ckpt")
    assert resumed.steps == 14 and resumed.score_means != saved

    other = AGMCallback({"audio": "encoders.audio", "depth": "encoders.visual"})
    with pytest.warns(UserWarning, match="start again from 0"):
        other.load_state_dict(callback.state_dict())
    assert other.steps == 0
    with pytest.warns(UserWarning, match="0.1 checkpoints kept ratio sums"):
        other.load_state_dict(
            {"ratio_sums": {"audio": 3.0, "depth": 2.0}, "steps": 3, "modalities": ["audio", "depth"]}
        )
    assert other.steps == 0


# --- MMPareto -----------------------------------------------------------------------------------


def test_mmpareto_conflict_takes_min_norm_weights_and_the_magnitude_rule() -> None:
    g_mm, g_u = [torch.tensor([1.0, 0.0]), torch.tensor([0.0])], [torch.tensor([-1.0, 1.0]), torch.tensor([0.0])]
    assert pareto_weights(torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0]))[:2] == pytest.approx((0.6, 0.4))
    finals, (w_mm, w_u, cosine) = mmpareto_gradients(g_mm, g_u, gamma=1.5)
    assert cosine < 0 and (w_mm, w_u) == pytest.approx((0.6, 0.4))
    direction = torch.tensor([0.4, 0.8])  # 2 (0.6 g_mm + 0.4 g_u)
    factor = max(1.0, 1.0 / float(direction.norm()))  # |g_sum| = |[0, 1]| = 1
    torch.testing.assert_close(finals[0], 1.5 * factor * direction)
    torch.testing.assert_close(finals[1], torch.tensor([0.0]))  # d = 0 for this tensor: guarded


def test_mmpareto_without_conflict_is_gamma_times_the_summed_gradient() -> None:
    g_mm, g_u = [torch.tensor([1.0, 2.0]), torch.tensor([[0.5]])], [torch.tensor([0.5, 1.0]), torch.tensor([[0.25]])]
    finals, (w_mm, w_u, cosine) = mmpareto_gradients(g_mm, g_u, gamma=1.5)
    assert cosine > 0 and (w_mm, w_u) == (0.5, 0.5)
    for final, a, b in zip(finals, g_mm, g_u, strict=True):
        torch.testing.assert_close(final, 1.5 * (a + b))


def test_mmpareto_step_uses_separate_gradients_and_leaves_the_heads_alone() -> None:
    module = model(unimodal_heads=True, unimodal_loss_weight=1.0)
    batch = first_batch()
    reference = copy.deepcopy(module).double()
    inputs = {k: v.double() if v.is_floating_point() else v for k, v in batch.items()}
    features = reference.encode(inputs)
    multimodal = F.cross_entropy(reference.fuse(features), batch["label"])
    unimodal = sum(F.cross_entropy(u, batch["label"]) for u in reference.unimodal_logits(features).values())
    expected: dict[str, Tensor] = {}
    for modality in ("audio", "visual"):
        params = list(reference.encoders[modality].named_parameters())
        g_mm = torch.autograd.grad(multimodal, [p for _, p in params], retain_graph=True)
        g_u = torch.autograd.grad(unimodal, [p for _, p in params], retain_graph=True)
        finals, _ = mmpareto_gradients(list(g_mm), list(g_u), gamma=1.5)
        expected.update({f"encoders.{modality}.{n}": -0.1 * g for (n, _), g in zip(params, finals, strict=True)})
    modulated, plain = one_step(MMParetoCallback(MODALITIES), module), one_step(None, module)
    for name, delta in modulated.items():
        target = expected.get(name, plain[name])  # heads: the plain summed gradient
        torch.testing.assert_close(delta, target, rtol=1e-6, atol=1e-12, msg=name)


def test_mmpareto_scales_with_gradient_accumulation() -> None:
    module = model(unimodal_heads=True, unimodal_loss_weight=1.0)
    accumulated = one_step(MMParetoCallback(MODALITIES), module, accumulate_grad_batches=2)
    assert all(torch.isfinite(d).all() for d in accumulated.values())
    single = one_step(MMParetoCallback(MODALITIES), module)
    # Two micro-batches averaged: not equal to one batch, but the same order of magnitude (no factor 2 error).
    ratio = float(accumulated["encoders.audio.net.0.weight"].norm() / single["encoders.audio.net.0.weight"].norm())
    assert 0.3 < ratio < 2.0


# --- the protocol and the configs ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("callback", "missing"),
    [
        (OGMGECallback({"audio": "audio_encoder", "visual": "visual_encoder"}), "split_logits"),
        (OPMCallback({"audio": "audio_encoder", "visual": "visual_encoder"}), "split_logits"),
        (AGMCallback({"audio": "audio_encoder", "visual": "visual_encoder"}), "fuse"),
        (MMParetoCallback({"audio": "audio_encoder", "visual": "visual_encoder"}), "fuse"),
    ],
)
def test_a_module_without_the_protocol_is_told_what_to_add(callback: pl.Callback, missing: str) -> None:
    module = TwoModalityModel()
    with pytest.raises(PDMPConfigurationError, match=rf"model`: got 'TwoModalityModel'.*`{missing}\("):
        trainer(callbacks=[callback]).fit(module)
    assert all(not m._forward_hooks for m in module.modules())


def test_mmpareto_needs_the_unimodal_losses() -> None:
    with pytest.raises(PDMPConfigurationError, match=r"`unimodal_loss_weight`: got 0.0"):
        trainer(callbacks=[MMParetoCallback(MODALITIES)]).fit(model(), datamodule=data())


def test_ogm_needs_a_fusion_whose_logits_split() -> None:
    with pytest.raises(PDMPConfigurationError, match=r"`fusion`: got 'film'"):
        trainer(callbacks=[OGMGECallback(MODALITIES)], max_steps=1).fit(model(fusion="film"), datamodule=data())


def test_ogm_on_a_regex_selection_with_explicit_feature_modules() -> None:
    module = model()
    callback = OGMGECallback(
        {"audio": r"re:^encoders\.audio\.net\.0\.weight$", "visual": r"re:^encoders\.visual\.net\.0\.weight$"},
        features={"audio": "encoders.audio", "visual": "encoders.visual"},
        generalization_enhancement=False,
    )
    modulated, plain = one_step(callback, module), one_step(None, module)
    k = callback.coefficients
    assert min(k.values()) < 1.0
    for name, delta in plain.items():
        modality = next((m for m in k if name == f"encoders.{m}.net.0.weight"), None)
        expected = delta * (k[modality] if modality else 1.0)  # every other tensor moves as without OGM
        torch.testing.assert_close(modulated[name], expected, rtol=1e-6, atol=1e-12, msg=name)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_opm_and_mmpareto_do_not_warn_about_gradient_scaling_with_adam(optimizer: str) -> None:
    factory = (lambda p: torch.optim.AdamW(p, lr=1e-3)) if optimizer == "adamw" else None
    for callback, kwargs in (
        (OPMCallback(MODALITIES, start_epoch=0), {}),
        (MMParetoCallback(MODALITIES), {"unimodal_heads": True, "unimodal_loss_weight": 1.0}),
    ):
        module = model(**kwargs, **({"optimizer": factory} if factory else {}))
        trainer(callbacks=[callback], max_steps=2, limit_val_batches=0).fit(module, **fixed_loaders())
        assert (
            callback.mechanism_in_use
            == {"OPMCallback": "features", "MMParetoCallback": "replace"}[type(callback).__name__]
        )


# --- nothing silent -----------------------------------------------------------------------------


class FoldFrames(torch.nn.Module):
    """``[B, d]`` -> ``[B * 2, d / 2]``: two "frames" per sample, folded into the batch (as video nets do)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0] * 2, x.shape[1] // 2)


class MeanOverFrames(torch.nn.Module):
    """``[B * 2, f]`` -> ``[B, f]``: the pooling back to one row per sample."""

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(-1, 2, x.shape[1]).mean(dim=1)


def folded_frames_model() -> MultimodalClassifier:
    torch.manual_seed(0)
    visual = torch.nn.Sequential(FoldFrames(), MLPEncoder(in_features=8, hidden=[8], out_features=8), MeanOverFrames())
    encoders = {"audio": MLPEncoder(in_features=16, hidden=[8], out_features=8), "visual": visual}
    return MultimodalClassifier(
        encoders, num_classes=4, modalities=["audio", "visual"], feature_dims={"audio": 8, "visual": 8}
    )


def test_ogm_refuses_features_with_a_row_per_frame() -> None:
    callback = OGMGECallback(MODALITIES, features={"audio": "encoders.audio", "visual": "encoders.visual.1"})
    pattern = r"`features\['visual'\]`: got 'the output of `encoders.visual.1` with 32 rows .*16 labels"
    with pytest.raises(PDMPConfigurationError, match=pattern):
        one_step(callback, folded_frames_model())
    assert not callback.is_modulating  # the hooks went with the error


def test_ogm_reads_the_pooled_features_of_a_model_that_folds_frames() -> None:
    callback = OGMGECallback(MODALITIES, generalization_enhancement=False)  # features: the whole (pooled) encoders
    module = folded_frames_model()
    modulated, plain = one_step(callback, module), one_step(None, module)
    k = callback.coefficients
    assert min(k.values()) < 1.0
    for name, delta in plain.items():
        modality = next((m for m in k if name.startswith(f"encoders.{m}.")), None)
        torch.testing.assert_close(modulated[name], delta * (k[modality] if modality else 1.0), rtol=1e-6, atol=1e-12)


class TensorFusion(torch.nn.Module):
    """A fusion called as ``fusion(a, v)`` with tensors (the official OGM-GE ``AVClassifier`` pattern)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, audio: Tensor, visual: Tensor) -> Tensor:
        logits: Tensor = self.inner({"audio": audio, "visual": visual})
        return logits


class TensorFusionModel(MultimodalClassifier):
    def __init__(self) -> None:
        torch.manual_seed(0)
        encoders = {m: MLPEncoder(in_features=16, hidden=[8], out_features=8) for m in ("audio", "visual")}
        super().__init__(encoders, num_classes=4, modalities=["audio", "visual"])
        self.fusion = TensorFusion(self.fusion)

    def fuse(self, features: Any) -> Tensor:
        logits: Tensor = self.fusion(features["audio"], features["visual"])
        return logits

    def split_logits(self, features: Any) -> dict[str, Tensor]:
        shares: dict[str, Tensor] = self.fusion.inner.split_logits(features)
        return shares


class BypassedFusion(TensorFusionModel):
    """Fuses without calling ``fusion`` at all."""

    def fuse(self, features: Any) -> Tensor:
        logits: Tensor = self.fusion.inner(features)
        return logits


def test_opm_refuses_a_fusion_called_with_tensors() -> None:
    callback = OPMCallback(MODALITIES, start_epoch=0, p_exe=0.99)
    with pytest.raises(PDMPConfigurationError, match=r"`fusion`: got 'a call with \(Tensor, Tensor\)'"):
        one_step(callback, TensorFusionModel())


def test_opm_refuses_a_forward_that_does_not_call_the_fusion() -> None:
    callback = OPMCallback(MODALITIES, start_epoch=0, p_exe=0.99)
    with pytest.raises(PDMPConfigurationError, match="not called in this training step"):
        one_step(callback, BypassedFusion())


def test_a_window_that_never_opens_is_a_warning() -> None:
    callback = OGMGECallback(MODALITIES, start_epoch=3)
    with pytest.warns(UserWarning, match=r"starts at epoch 3, but training stops after 2 epoch\(s\)"):
        one_step(callback, model(), max_steps=-1, max_epochs=2)


class PerModalityRates(MultimodalClassifier):
    """The reference: each encoder in its own AdamW group, its rate following recorded multipliers step by step."""

    def __init__(self, history: list[dict[str, float]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.history = history

    def configure_optimizers(self) -> Any:
        groups = [{"params": list(self.encoders[m].parameters())} for m in ("audio", "visual")]
        groups.append({"params": list(self.fusion.parameters())})
        optimizer = torch.optim.AdamW(groups, lr=1e-2)
        lambdas = [lambda step, m=m: self.history[min(step, len(self.history) - 1)][m] for m in ("audio", "visual")]
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, [*lambdas, lambda step: 1.0])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


@pytest.mark.parametrize("name", ["ogm_ge", "agm"])
def test_under_update_each_step_takes_its_own_coefficient(name: str) -> None:
    """AdamW (``auto`` -> ``update``): the multipliers of step t scale step t's update, the first step included."""
    adamw = {"optimizer": lambda params: torch.optim.AdamW(params, lr=1e-2)}
    callback = (
        OGMGECallback(MODALITIES, generalization_enhancement=False)
        if name == "ogm_ge"
        else AGMCallback(MODALITIES, mechanism="auto")
    )
    recorder = MultiplierHistory(callback)
    module = copy.deepcopy(model(**adamw))
    trainer(callbacks=[callback, recorder], max_steps=5, precision="64-true", limit_val_batches=0).fit(
        module, **fixed_loaders()
    )
    assert callback.mechanism_in_use == "update"
    history = recorder.history
    assert len(history) == 5
    assert history[0] != {"audio": 1.0, "visual": 1.0}  # the first step is modulated
    assert len({tuple(sorted(step.items())) for step in history}) > 2  # it changes from step to step

    torch.manual_seed(0)
    encoders = {m: MLPEncoder(in_features=16, hidden=[8], out_features=8) for m in ("audio", "visual")}
    reference = PerModalityRates(history, encoders=encoders, num_classes=4, modalities=["audio", "visual"])
    trainer(max_steps=5, precision="64-true", limit_val_batches=0).fit(reference, **fixed_loaders())
    expected = dict(reference.named_parameters())
    for parameter, value in module.named_parameters():
        torch.testing.assert_close(value, expected[parameter], rtol=1e-10, atol=1e-13, msg=parameter)
