"""One optimizer step with PDMPCallback moves each encoder exactly k times as far as without it.

Coefficients are powers of two, so scaling is exact in every floating-point format and the checks
can be tight even under bf16 autocast.
"""

from __future__ import annotations

import copy

import pytest
import torch

from tests.helpers import K, TwoModalityModel, group_of, moves, parameters, pdmp, trainer


def assert_scaled(plain: dict[str, torch.Tensor], modulated: dict[str, torch.Tensor], rtol: float = 1e-5) -> None:
    for name, delta in plain.items():
        k = K.get(group_of(name), 1.0)
        assert delta.abs().sum() > 0, f"{name} did not move: the check would be vacuous"
        expected = delta * k
        atol = rtol * float(expected.abs().max())
        torch.testing.assert_close(modulated[name], expected, rtol=rtol, atol=atol, msg=f"{name} (k={k})")


@pytest.mark.parametrize("mechanism", ["auto", "activation", "parameter", "grad", "update"])
def test_sgd_step_is_scaled_exactly(mechanism: str) -> None:
    torch.manual_seed(0)
    model = TwoModalityModel(optimizer="sgd")
    callback = pdmp(mechanism=mechanism)
    modulated = moves(model, callbacks=[callback])
    assert_scaled(moves(model), modulated)
    expected = {"auto": "activation"}.get(mechanism, mechanism)
    assert callback.mechanism_in_use == expected


@pytest.mark.parametrize("mechanism", ["auto", "update"])
def test_adamw_step_is_scaled_exactly(mechanism: str) -> None:
    torch.manual_seed(0)
    model = TwoModalityModel(optimizer="adamw", lr=1e-3)
    callback = pdmp(mechanism=mechanism)
    assert_scaled(moves(model), moves(model, callbacks=[callback]))
    assert callback.mechanism_in_use == "update"


def test_gradient_mechanism_with_adam_warns() -> None:
    torch.manual_seed(0)
    model = TwoModalityModel(optimizer="adam", lr=1e-3)
    with pytest.warns(UserWarning, match="normalise the gradient's scale away"):
        moves(model, callbacks=[pdmp(mechanism="parameter")])


@pytest.mark.parametrize("mechanism", ["activation", "parameter", "grad", "update"])
def test_gradient_accumulation_scales_once(mechanism: str) -> None:
    torch.manual_seed(0)
    small = TwoModalityModel(batch_size=4)
    large = copy.deepcopy(small)
    large.batch_size = 12
    accumulated = moves(small, callbacks=[pdmp(mechanism=mechanism)], accumulate_grad_batches=3)
    one_batch = moves(large, callbacks=[pdmp(mechanism=mechanism)])
    for name in one_batch:
        torch.testing.assert_close(accumulated[name], one_batch[name], rtol=1e-5, atol=1e-7)
    assert_scaled(moves(large), accumulated)


@pytest.mark.parametrize("mechanism", ["activation", "parameter", "grad"])
def test_bf16_autocast(mechanism: str) -> None:
    torch.manual_seed(0)
    model = TwoModalityModel()
    plain = moves(model, precision="bf16-mixed")
    modulated = moves(model, callbacks=[pdmp(mechanism=mechanism)], precision="bf16-mixed")
    # float32 parameters: a step of ~1e-3 on weights of ~0.3 is only known to ~1e-4 relative.
    assert_scaled(plain, modulated, rtol=1e-3)


@pytest.mark.parametrize("mechanism", ["activation", "parameter", "grad", "update"])
def test_manual_optimization(mechanism: str) -> None:
    torch.manual_seed(0)
    model = TwoModalityModel(manual=True)
    assert_scaled(moves(model), moves(model, callbacks=[pdmp(mechanism=mechanism)]))


def test_warm_up_epochs_are_not_modulated() -> None:
    torch.manual_seed(0)
    model = TwoModalityModel(batch_size=48)  # one batch per epoch
    callback = pdmp(start_epoch=1)
    with pytest.warns(UserWarning, match="nothing will be modulated in this fit"):
        one_epoch = moves(model, callbacks=[callback], max_steps=-1, max_epochs=1)
    assert not callback.is_modulating
    for name, delta in moves(model, max_steps=-1, max_epochs=1).items():
        torch.testing.assert_close(one_epoch[name], delta, rtol=1e-6, atol=0.0)


def test_window_end_restores_plain_steps() -> None:
    torch.manual_seed(0)
    model = TwoModalityModel(batch_size=48)  # one batch per epoch; plain SGD is stateless
    expected = copy.deepcopy(model)
    trainer(callbacks=[pdmp()], max_steps=1).fit(expected)  # epoch 0: modulated
    trainer(max_steps=1).fit(expected)  # epoch 1: plain
    callback = pdmp(end_epoch=1)
    trainer(callbacks=[callback], max_steps=-1, max_epochs=2).fit(model)
    for name, value in parameters(expected).items():
        torch.testing.assert_close(parameters(model)[name], value, rtol=1e-6, atol=1e-8)
