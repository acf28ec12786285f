"""No hook outlives a fit; a second fit scales once; a checkpoint restores the ranking without probing."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint

from pdmp_lightning import PDMPCallback, ProbeSettings
from pdmp_lightning.probing.runner import ProbeRunner
from tests.helpers import MODALITIES, TwoModalityModel, WithValidation, group_of, moves, pdmp, random_data, trainer

MECHANISMS = ["activation", "parameter", "grad", "update"]


def gradients(model: TwoModalityModel) -> dict[str, torch.Tensor]:
    model.zero_grad()
    batch = {
        k: v[:8].to(next(model.parameters()).dtype) if v.is_floating_point() else v[:8]
        for k, v in random_data().tensors.items()
    }
    F.cross_entropy(model(batch), batch["label"]).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_plain_backward(model: TwoModalityModel) -> None:
    """A backward through ``model`` gives the gradients of an identical hook-free copy."""
    clean = TwoModalityModel().to(next(model.parameters()).dtype)
    clean.load_state_dict(model.state_dict())
    expected = gradients(clean)
    for name, grad in gradients(model).items():
        torch.testing.assert_close(grad, expected[name], rtol=0, atol=0, msg=name)
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_no_hook_left_after_fit(mechanism: str) -> None:
    model = TwoModalityModel()
    callback = pdmp(mechanism=mechanism)
    trainer(callbacks=[callback], max_steps=2).fit(model)
    assert not callback.is_modulating
    assert_plain_backward(model)


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_no_hook_left_after_an_exception_and_a_second_fit_scales_once(mechanism: str) -> None:
    torch.manual_seed(0)
    model = TwoModalityModel(fail_at_step=1)
    callback = pdmp(mechanism=mechanism)
    with pytest.raises(RuntimeError, match="planned failure"):
        trainer(callbacks=[callback], max_steps=3).fit(model)
    assert not callback.is_modulating
    assert_plain_backward(model)

    model.fail_at_step = None
    plain = moves(copy.deepcopy(model))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer(callbacks=[callback], max_steps=1).fit(model)  # same callback, same module
    for name, delta in plain.items():
        k = callback.coefficients.get(group_of(name), 1.0)
        torch.testing.assert_close(model.get_parameter(name).detach() - before[name], delta * k, rtol=1e-5, atol=1e-9)
    assert_plain_backward(model)


def test_second_fit_keeps_the_probed_ranking_without_probing(monkeypatch: pytest.MonkeyPatch) -> None:
    callback = PDMPCallback(MODALITIES, probes=ProbeSettings(max_epochs=1))
    model = WithValidation()
    trainer(callbacks=[callback], max_steps=1).fit(model)
    ranking = callback.ranking
    monkeypatch.setattr(ProbeRunner, "run", _no_probe)
    trainer(callbacks=[callback], max_steps=1).fit(model)
    assert callback.ranking == ranking


def _no_probe(*args: object, **kwargs: object) -> None:
    raise AssertionError("the probes ran again")


RESUMING_IN_PLACE = pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")


@RESUMING_IN_PLACE
def test_resume_restores_the_ranking_without_probing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = PDMPCallback(MODALITIES, probes=ProbeSettings(max_epochs=2), start_epoch=1)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    with pytest.warns(UserWarning, match=r"starts at epoch 1, but training stops after 1 epoch\(s\)"):
        trainer(callbacks=[first, checkpoint], max_steps=-1, max_epochs=1, enable_checkpointing=True).fit(
            WithValidation()
        )
    assert first.ranking is not None

    monkeypatch.setattr(ProbeRunner, "run", _no_probe)
    resumed = PDMPCallback(MODALITIES, probes=ProbeSettings(max_epochs=2), start_epoch=1)
    again = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    run = trainer(callbacks=[resumed, again], max_steps=-1, max_epochs=2, enable_checkpointing=True)
    run.fit(WithValidation(), ckpt_path=tmp_path / "last.ckpt")
    assert resumed.ranking == first.ranking and resumed.probe_scores == first.probe_scores
    assert resumed.coefficients == first.coefficients
    assert run.current_epoch == 2 and run.global_step == 2 * 6


@RESUMING_IN_PLACE
def test_checkpoint_of_another_modality_set_warns_and_probes_again(tmp_path: Path) -> None:
    first = PDMPCallback(MODALITIES, probes=ProbeSettings(max_epochs=1))
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer(callbacks=[first, checkpoint], max_steps=-1, max_epochs=1, enable_checkpointing=True).fit(WithValidation())

    other = PDMPCallback({"audio": "audio_encoder.0", "visual": "visual_encoder"}, probes=ProbeSettings(max_epochs=1))
    # Its state key names its modalities: the checkpoint holds no state for it, and Lightning says so.
    with pytest.warns(UserWarning, match=r"add the following callbacks: .*PDMPCallback\{'modalities'"):
        again = ModelCheckpoint(dirpath=tmp_path, save_last=True)
        run = trainer(callbacks=[other, again], max_steps=-1, max_epochs=2, enable_checkpointing=True)
        run.fit(WithValidation(), ckpt_path=tmp_path / "last.ckpt")
    assert other.probe_outcome is not None


def test_a_non_finite_gradient_is_reported_naming_the_modality() -> None:
    model = TwoModalityModel()
    model.visual_encoder[0].weight.register_hook(lambda grad: grad * float("nan"))  # only this tensor goes bad
    callback = pdmp(log_every_n_steps=1)
    with pytest.warns(UserWarning, match=r"gradient of modality 'visual' is not finite \(NaN or inf\) at step 0"):
        trainer(callbacks=[callback], max_steps=1).fit(model)
    assert callback._reported_non_finite == {"visual"}


def test_two_instances_keep_their_own_checkpoint_state() -> None:
    first = PDMPCallback(MODALITIES, ranking=["visual", "audio"])
    other = PDMPCallback({"audio": "audio_encoder.0", "visual": "visual_encoder.0"}, ranking=["audio", "visual"])
    assert first.state_key != other.state_key and first.state_key.startswith("PDMPCallback{")
    assert first.state_key == PDMPCallback(MODALITIES).state_key  # stable: the constructor's modality selection


@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")
def test_a_checkpoint_of_version_0_1_keyed_by_the_class_name_still_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = PDMPCallback(MODALITIES, probes=ProbeSettings(max_epochs=2), start_epoch=0)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer(callbacks=[first, checkpoint], max_steps=-1, max_epochs=1, enable_checkpointing=True).fit(WithValidation())
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)
    saved["callbacks"]["PDMPCallback"] = saved["callbacks"].pop(first.state_key)  # how 0.1 keyed it
    torch.save(saved, tmp_path / "old.ckpt")

    monkeypatch.setattr(ProbeRunner, "run", _no_probe)
    resumed = PDMPCallback(MODALITIES, probes=ProbeSettings(max_epochs=2), start_epoch=0)
    run = trainer(callbacks=[resumed], max_steps=-1, max_epochs=2)
    run.fit(WithValidation(), ckpt_path=tmp_path / "old.ckpt")
    assert resumed.ranking == first.ranking and resumed.probe_scores == first.probe_scores
