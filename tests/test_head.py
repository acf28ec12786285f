"""``head=``: the baselines on a model that implements no protocol, and every way it can go wrong, said."""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy
from torch import Tensor

from pdmp_lightning import (
    AGMCallback,
    MMParetoCallback,
    OGMGECallback,
    OPMCallback,
    PDMPCallback,
    PDMPConfigurationError,
)
from pdmp_lightning.models import MLPEncoder, MultimodalClassifier
from tests import avclassifier
from tests.helpers import trainer
from tests.test_baselines import MODALITIES, BypassedFusion, fixed_loaders, one_step

SGD = lambda params: torch.optim.SGD(params, lr=0.1)  # noqa: E731


def mlp(fusion: str = "concat", **kwargs: Any) -> MultimodalClassifier:
    torch.manual_seed(0)
    encoders = {m: MLPEncoder(in_features=16, hidden=[8], out_features=8) for m in ("audio", "visual")}
    return MultimodalClassifier(encoders, num_classes=4, fusion=fusion, optimizer=SGD, **kwargs)


def av_fit(callback: Any, steps: int = 2) -> avclassifier.AVModule:
    module = avclassifier.av_module(SGD)
    trainer(callbacks=[callback], max_steps=steps, limit_val_batches=0).fit(
        module, train_dataloaders=avclassifier.av_loader(steps, 8)
    )
    return module


# --- the same result as the protocol, from the head alone ---------------------------------------------


@pytest.mark.parametrize(
    ("fusion", "head"),
    [("concat", "fusion.head"), ("sum", {"audio": "fusion.heads.audio", "visual": "fusion.heads.visual"})],
)
def test_ogm_ge_with_head_equals_the_protocol_path(fusion: str, head: Any) -> None:
    protocol = OGMGECallback(MODALITIES, generalization_enhancement=False)
    named = OGMGECallback(MODALITIES, generalization_enhancement=False, head=head)
    expected, got = one_step(protocol, mlp(fusion)), one_step(named, mlp(fusion))
    assert min(named.coefficients.values()) < 1.0 and named.coefficients == protocol.coefficients
    for name, delta in expected.items():
        torch.testing.assert_close(got[name], delta, rtol=1e-12, atol=1e-15, msg=name)


def test_agm_with_head_equals_agm_through_the_fusion() -> None:
    # Input masking reruns MultimodalClassifier.forward, the module that calls the encoders and the fusion.
    through_fusion, named = AGMCallback(MODALITIES), AGMCallback(MODALITIES, head="fusion.head")
    expected, got = one_step(through_fusion, mlp()), one_step(named, mlp())
    assert named.coefficients == through_fusion.coefficients != {"audio": 1.0, "visual": 1.0}
    for name, delta in expected.items():
        torch.testing.assert_close(got[name], delta, rtol=1e-12, atol=1e-15, msg=name)


@pytest.mark.parametrize("masking", ["inputs", "features"])
def test_agm_responses_leave_the_logits_and_the_loss_as_they_are(masking: str) -> None:
    """The training logits become the sum of the responses: equal in value, only their gradient is scaled."""
    losses: dict[str, Tensor] = {}

    class Recording(MultimodalClassifier):
        def training_step(self, batch: Any, batch_idx: int) -> Tensor:
            loss = super().training_step(batch, batch_idx)
            losses.setdefault(self.tag, loss.detach())
            return loss

    torch.manual_seed(0)
    encoders = {m: MLPEncoder(in_features=16, hidden=[8], out_features=8) for m in ("audio", "visual")}
    module = Recording(encoders, num_classes=4, optimizer=SGD)
    for tag, callbacks in (("plain", []), ("agm", [AGMCallback(MODALITIES, masking=masking)])):
        copied = copy.deepcopy(module)
        copied.tag = tag
        trainer(callbacks=callbacks, max_steps=1, limit_val_batches=0).fit(copied, **fixed_loaders())
    torch.testing.assert_close(losses["agm"], losses["plain"], rtol=1e-14, atol=0)


def test_agm_three_modalities_takes_exact_shapley_responses() -> None:
    torch.manual_seed(0)
    names = ("a", "b", "c")
    encoders = {m: MLPEncoder(in_features=16, hidden=[8], out_features=8) for m in names}
    module = MultimodalClassifier(encoders, num_classes=4, optimizer=SGD)
    batch = {m: torch.randn(16, 16, dtype=torch.float64) for m in names} | {"label": torch.randint(0, 4, (16,))}
    loader = torch.utils.data.DataLoader([{k: v[i] for k, v in batch.items()} for i in range(16)], batch_size=16)
    callback = AGMCallback({m: f"encoders.{m}" for m in names})
    trainer(callbacks=[callback], max_steps=1, limit_val_batches=0).fit(
        module, train_dataloaders=loader, val_dataloaders=loader
    )
    assert callback.steps == 1 and set(callback.score_means) == set(names)
    assert len(set(callback.coefficients.values())) == 3


# --- the official AVClassifier pattern -------------------------------------------------------------------


def test_every_method_but_mmpareto_runs_on_the_avclassifier_with_head_only() -> None:
    for callback in (
        OGMGECallback(avclassifier.MODALITIES, head=avclassifier.HEAD),
        OPMCallback(avclassifier.MODALITIES, head=avclassifier.HEAD, start_epoch=0, p_exe=0.99),
        AGMCallback(avclassifier.MODALITIES, head=avclassifier.HEAD),
    ):
        av_fit(callback)
        assert not callback.is_modulating


@pytest.mark.parametrize("make", [OGMGECallback, OPMCallback, AGMCallback])
def test_without_head_the_avclassifier_gets_an_error_that_names_head(make: Any) -> None:
    with pytest.raises(PDMPConfigurationError, match="head="):
        av_fit(make(avclassifier.MODALITIES))


# --- bad heads -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "pattern"),
    [
        ({"head": "model.fusion_module.nothing"}, r"`head`: got 'model.fusion_module.nothing'; expected the dotted"),
        ({"head": "model.fusion_module"}, r"`head`: got 'model.fusion_module \(ConcatFusion\)'; expected an nn.Linear"),
        ({"head": avclassifier.HEAD, "head_widths": {"audio": 4, "visual": 8}}, r"add up to the head's in_features"),
    ],
)
def test_a_head_that_does_not_fit_the_model_is_refused_before_any_hook(arguments: dict[str, Any], pattern: str) -> None:
    callback = OGMGECallback(avclassifier.MODALITIES, **arguments)
    module = avclassifier.av_module(SGD)
    with pytest.raises(PDMPConfigurationError, match=pattern):
        trainer(callbacks=[callback], max_steps=1, limit_val_batches=0).fit(
            module, train_dataloaders=avclassifier.av_loader(1, 8)
        )
    assert not callback.is_modulating
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in module.modules())


@pytest.mark.parametrize(
    ("arguments", "pattern"),
    [
        ({"head": 3}, r"`head`: got 3; expected None, the dotted path"),
        ({"head": {"audio": "x"}}, r"`head`: got \{'audio': 'x'\}; expected one linear layer's path for each"),
        (
            {"head": "h", "features": {"audio": "a", "visual": "v"}},
            r"`features`: .* expected None when `head` is named",
        ),
        ({"head_widths": {"audio": 8, "visual": 8}}, r"`head_widths`: .* expected None when no `head` is named"),
        ({"head": "h", "head_widths": {"audio": 0, "visual": 8}}, r"`head_widths`: .* a positive column count"),
    ],
)
def test_bad_head_arguments_are_refused_at_construction(arguments: dict[str, Any], pattern: str) -> None:
    with pytest.raises(PDMPConfigurationError, match=pattern):
        OGMGECallback(MODALITIES, **arguments)


@pytest.mark.parametrize("make", [OPMCallback, AGMCallback])
def test_methods_that_act_on_the_fused_logits_refuse_a_sum_of_heads(make: Any) -> None:
    callback = make(MODALITIES, head={"audio": "fusion.heads.audio", "visual": "fusion.heads.visual"})
    with pytest.raises(PDMPConfigurationError, match=r"one nn\.Linear that produces the fused logits"):
        one_step(callback, mlp("sum"))


def test_unequal_widths_need_head_widths() -> None:
    torch.manual_seed(0)
    encoders = {"audio": MLPEncoder(16, out_features=8), "visual": MLPEncoder(16, out_features=5)}
    module = MultimodalClassifier(encoders, num_classes=4, optimizer=SGD)
    with pytest.raises(PDMPConfigurationError, match=r"`head_widths`: got None; .* do not split equally"):
        one_step(OGMGECallback(MODALITIES, head="fusion.head"), module)
    protocol = OGMGECallback(MODALITIES, generalization_enhancement=False)
    named = OGMGECallback(
        MODALITIES, generalization_enhancement=False, head="fusion.head", head_widths={"audio": 8, "visual": 5}
    )
    one_step(protocol, module), one_step(named, module)
    assert named.coefficients == protocol.coefficients


# --- AGM: nothing silent ---------------------------------------------------------------------------------


class FusesWithoutForward(MultimodalClassifier):
    """A training step that never calls the module itself (it calls encode and fuse directly)."""

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return F.cross_entropy(self.fuse(self.encode(batch)), batch["label"])


def test_agm_input_masking_needs_the_forward_it_reruns_and_says_so() -> None:
    torch.manual_seed(0)
    encoders = {m: MLPEncoder(in_features=16, hidden=[8], out_features=8) for m in ("audio", "visual")}
    module = FusesWithoutForward(encoders, num_classes=4, optimizer=SGD)
    callback = AGMCallback(MODALITIES)
    with pytest.raises(
        PDMPConfigurationError, match=r"`masking`: got 'inputs'; expected a training forward that calls"
    ):
        one_step(callback, module)
    assert not callback.is_modulating
    feature_masking = AGMCallback(MODALITIES, masking="features")
    assert any(bool(d.abs().sum() > 0) for d in one_step(feature_masking, module).values())


def test_agm_refuses_a_forward_that_does_not_reach_the_fused_logits() -> None:
    with pytest.raises(PDMPConfigurationError, match="not called in this training step"):
        one_step(AGMCallback(MODALITIES, masking="features"), BypassedFusion())


def test_agm_input_masking_needs_each_encoder_by_path() -> None:
    callback = AGMCallback({"audio": r"re:^encoders\.audio\.", "visual": "encoders.visual"})
    with pytest.raises(PDMPConfigurationError, match=r"`modalities\['audio'\]`: .* one submodule path"):
        one_step(callback, mlp())


def test_agm_bad_mechanism_and_masking_are_refused() -> None:
    with pytest.raises(PDMPConfigurationError, match="`mechanism`: got 'loss'; expected 'responses'"):
        AGMCallback(MODALITIES, mechanism="loss")  # type: ignore[arg-type]
    with pytest.raises(PDMPConfigurationError, match="`masking`: got 'outputs'"):
        AGMCallback(MODALITIES, masking="outputs")  # type: ignore[arg-type]


def test_agm_on_the_encoders_leaves_the_head_alone() -> None:
    """``mechanism="grad"``: the official coefficients scale the encoders' gradients only."""
    callback = AGMCallback(MODALITIES, mechanism="grad", clip_fusion_gradient=False)
    modulated, plain = one_step(callback, mlp()), one_step(None, mlp())
    k = callback.coefficients
    assert callback.mechanism_in_use == "grad" and min(k.values()) < 1.0 < max(k.values())
    for name, delta in plain.items():
        modality = next((m for m in k if name.startswith(f"encoders.{m}.")), None)
        torch.testing.assert_close(modulated[name], delta * (k[modality] if modality else 1.0), rtol=1e-9, atol=1e-15)


def test_the_old_name_of_the_coefficients_still_reads_them_with_a_warning() -> None:
    callback = OGMGECallback(MODALITIES)
    with pytest.deprecated_call(match="use `coefficients`"):
        assert callback.multipliers == callback.coefficients == {}


@pytest.mark.parametrize(
    ("callback", "why"),
    [
        (AGMCallback(MODALITIES), "masked passes rerun"),
        (AGMCallback(MODALITIES, mechanism="grad"), "masked passes rerun"),
        (MMParetoCallback(MODALITIES), "replaces each encoder's gradient"),
        (OGMGECallback(MODALITIES), "score the modalities from the head's weights"),
        (OPMCallback(MODALITIES), "score the modalities from the head's weights"),
    ],
)
@pytest.mark.parametrize("strategy", [FSDPStrategy, ModelParallelStrategy])
def test_the_baselines_refuse_sharded_strategies_in_setup(callback: Any, why: str, strategy: Any) -> None:
    fake = SimpleNamespace(strategy=strategy())
    name = type(callback).__name__
    pattern = rf"got '{strategy.__name__}'; expected a single-device or DDP strategy for {name}.*{why}"
    with pytest.raises(PDMPConfigurationError, match=pattern):
        callback.setup(fake, mlp(), "fit")


# --- the modulation reached the model ----------------------------------------------------------------------


def test_ogm_ge_refuses_parameters_the_loss_never_reaches() -> None:
    module = mlp(unimodal_heads=True)  # unimodal heads without a unimodal loss: they never get a gradient
    callback = OGMGECallback(
        {"audio": r"re:^unimodal_heads\.audio\.", "visual": "encoders.visual"},
        features={"audio": "encoders.audio", "visual": "encoders.visual"},
    )
    with pytest.raises(PDMPConfigurationError, match=r"`modalities\['audio'\]`: got '2 parameters, none with a grad"):
        one_step(callback, module)
    assert not callback.is_modulating


class DetachesAudio(MultimodalClassifier):
    """Trains on the audio features detached: the backward never reaches the audio encoder."""

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        features = self.encode(batch)
        features = {**features, "audio": features["audio"].detach()}
        labels = batch["label"]
        unimodal = sum(F.cross_entropy(u, labels) for u in self.unimodal_logits(features).values())
        return F.cross_entropy(self.fuse(features), labels) + unimodal


def test_mmpareto_refuses_encoders_the_backward_never_reaches() -> None:
    torch.manual_seed(0)
    encoders = {m: MLPEncoder(in_features=16, hidden=[8], out_features=8) for m in ("audio", "visual")}
    module = DetachesAudio(encoders, num_classes=4, unimodal_heads=True, unimodal_loss_weight=1.0, optimizer=SGD)
    callback = MMParetoCallback(MODALITIES)
    with pytest.raises(PDMPConfigurationError, match=r"whose gradient was never replaced \(encoders\.audio\."):
        one_step(callback, module)


@pytest.mark.parametrize("mechanism", ["activation", "parameter", "grad", "update"])
def test_pdmp_refuses_an_encoder_the_backward_never_reaches(mechanism: str) -> None:
    torch.manual_seed(0)
    encoders = {m: MLPEncoder(in_features=16, hidden=[8], out_features=8) for m in ("audio", "visual")}
    module = DetachesAudio(encoders, num_classes=4, unimodal_heads=True, optimizer=SGD)
    callback = PDMPCallback(MODALITIES, ranking=["audio", "visual"], start_epoch=0, mechanism=mechanism)
    with pytest.raises(PDMPConfigurationError, match=r"`modalities\['audio'\]`: got '4 parameters, none with a grad"):
        one_step(callback, module)
    assert not callback.is_modulating


@pytest.mark.parametrize("make", [OGMGECallback, OPMCallback, AGMCallback, MMParetoCallback])
@pytest.mark.parametrize(
    ("targets", "kind"),
    [(lambda n: torch.randn(n), "real targets"), (lambda n: (torch.rand(n, 3) > 0.5).float(), "multi-label")],
)
def test_the_baselines_refuse_targets_that_are_not_class_labels(make: Any, targets: Any, kind: str) -> None:
    """Regression or multi-label targets would be cast to class indices in silence: refused at the first batch."""
    count = 32
    samples = [{"audio": torch.randn(16), "visual": torch.randn(16), "label": label} for label in targets(count)]
    loader = torch.utils.data.DataLoader(samples, batch_size=16)
    module = mlp(unimodal_heads=make is MMParetoCallback, unimodal_loss_weight=1.0 if make is MMParetoCallback else 0.0)
    callback = make(MODALITIES)
    with pytest.raises(PDMPConfigurationError, match=rf"`target`: got \"'label': {kind}.*defined through class"):
        trainer(callbacks=[callback], max_steps=1, limit_val_batches=0).fit(
            module, train_dataloaders=loader, val_dataloaders=loader
        )
    assert not callback.is_modulating


@pytest.mark.parametrize("make", [OGMGECallback, OPMCallback, AGMCallback, MMParetoCallback])
@pytest.mark.parametrize("task", ["regression", "multilabel"])
def test_the_baselines_refuse_a_model_of_another_task_in_setup(make: Any, task: str) -> None:
    torch.manual_seed(0)
    encoders = {m: MLPEncoder(in_features=16, hidden=[8], out_features=8) for m in ("audio", "visual")}
    module = MultimodalClassifier(encoders, num_classes=1 if task == "regression" else 3, task=task)
    with pytest.raises(PDMPConfigurationError, match=rf"`target`: got \"'label' of a {task} model"):
        make(MODALITIES).setup(SimpleNamespace(strategy=None), module, "fit")
