"""Where each mechanism is exact, where it falls back, and what it refuses."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy, ModelParallelStrategy, SingleDeviceStrategy
from torch import Tensor, nn

from pdmp_lightning import MMParetoCallback, PDMPCallback, PDMPConfigurationError
from tests.helpers import AUDIO_DIM, K, TwoModalityModel, moves, pdmp, trainer


def check(plain: dict[str, Tensor], modulated: dict[str, Tensor], groups: dict[str, str]) -> None:
    """``groups`` maps a parameter-name prefix to its modality; anything else must move as without PDMP."""
    for name, delta in plain.items():
        modality = next((m for prefix, m in groups.items() if name.startswith(prefix)), None)
        k = K[modality] if modality else 1.0
        assert delta.abs().sum() > 0, name
        torch.testing.assert_close(modulated[name], delta * k, rtol=1e-6, atol=1e-12, msg=name)


class SharedStemModel(TwoModalityModel):
    """Both encoders read the output of one trainable stem: its gradient must not be scaled."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stem = nn.Linear(AUDIO_DIM, AUDIO_DIM)
        self.visual_encoder[0] = nn.Linear(AUDIO_DIM, 16)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        shared = torch.tanh(self.stem(batch["audio"]))
        return self.head(torch.cat([self.audio_encoder(shared), self.visual_encoder(shared)], dim=1))


def test_activation_leaves_a_shared_upstream_module_alone() -> None:
    torch.manual_seed(0)
    model = SharedStemModel()
    callback = pdmp(mechanism="activation")
    modulated = moves(model, callbacks=[callback])
    check(moves(model), modulated, {"audio_encoder": "audio", "visual_encoder": "visual"})
    assert callback.groups["audio"].output_scaling_is_exact


class BypassModel(TwoModalityModel):
    """Calls the audio encoder's layers one by one: audio_encoder.forward never runs."""

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        audio = batch["audio"]
        for layer in self.audio_encoder:
            audio = layer(audio)
        return self.head(torch.cat([audio, self.visual_encoder(batch["visual"])], dim=1))


def test_activation_falls_back_to_parameter_hooks_when_the_forward_is_bypassed() -> None:
    torch.manual_seed(0)
    model = BypassModel()
    with pytest.warns(UserWarning, match=r"`audio_encoder` \(modality 'audio'\) did not run.*parameter hooks"):
        modulated = moves(model, callbacks=[pdmp(mechanism="activation")])
    # The fallback happens before the first backward, so even that step is exact.
    check(moves(model), modulated, {"audio_encoder": "audio", "visual_encoder": "visual"})


class TiedModel(TwoModalityModel):
    """The visual encoder's first layer is also registered (and used) outside the encoder."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.visual_shortcut = self.visual_encoder[0]

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        visual = self.visual_encoder(batch["visual"]) + self.visual_shortcut(batch["visual"])
        return self.head(torch.cat([self.audio_encoder(batch["audio"]), visual], dim=1))


def test_tied_parameters_use_parameter_hooks() -> None:
    torch.manual_seed(0)
    model = TiedModel()
    callback = pdmp(mechanism="activation")
    modulated = moves(model, callbacks=[callback])
    assert not callback.groups["visual"].output_scaling_is_exact and callback.groups["audio"].output_scaling_is_exact
    check(moves(model), modulated, {"audio_encoder": "audio", "visual_encoder": "visual"})


def test_regex_groups_scale_exactly() -> None:
    torch.manual_seed(0)
    model = TwoModalityModel()
    callback = PDMPCallback(
        {"audio": "re:^audio_encoder\\.", "visual": "re:^visual_encoder\\.0\\."},
        ranking=["visual", "audio"],
        gamma_p=4.0,
        gamma_r=0.5,
        start_epoch=0,
    )
    modulated = moves(model, callbacks=[callback])
    check(moves(model), modulated, {"audio_encoder": "audio", "visual_encoder.0.": "visual"})
    assert callback.mechanism_in_use == "activation"  # with parameter hooks for both regex groups


def test_deepspeed_is_refused() -> None:
    fake = SimpleNamespace(strategy=DeepSpeedStrategy.__new__(DeepSpeedStrategy))
    with pytest.raises(PDMPConfigurationError, match=r"`Trainer\(strategy=...\)`: got 'DeepSpeedStrategy'.*FSDP"):
        pdmp().setup(fake, TwoModalityModel(), "fit")  # type: ignore[arg-type]


def _fake_trainer(strategy: Any, optimizer: torch.optim.Optimizer, model: nn.Module) -> Any:
    return SimpleNamespace(strategy=strategy, optimizers=[optimizer], lightning_module=model)


@pytest.mark.parametrize(("optimizer", "expected"), [("sgd", "grad"), ("adamw", "update")])
def test_fsdp_picks_a_sharding_safe_mechanism(optimizer: str, expected: str) -> None:
    model = TwoModalityModel(optimizer=optimizer)
    callback = pdmp()
    callback.on_fit_start(None, model)  # type: ignore[arg-type]
    fake = _fake_trainer(FSDPStrategy(), model.configure_optimizers(), model)
    assert callback._resolve_mechanism(fake) == expected
    forced = pdmp(mechanism="activation")
    forced.on_fit_start(None, model)  # type: ignore[arg-type]
    with pytest.raises(PDMPConfigurationError, match=r"`mechanism`: got 'activation'.*under FSDP"):
        forced._resolve_mechanism(fake)


def test_logged_coefficients_follow_the_window(tmp_path: Path) -> None:
    model = TwoModalityModel(batch_size=16)  # 3 steps per epoch
    logger = CSVLogger(tmp_path, name="run")
    callback = pdmp(start_epoch=1)
    trainer(callbacks=[callback], logger=logger, max_steps=-1, max_epochs=2, log_every_n_steps=1).fit(model)
    rows = (Path(logger.log_dir) / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    values = [dict(zip(header, row.split(","), strict=True)) for row in rows[1:]]
    visual = [(int(v["step"]), float(v["pdmp/coefficient/visual"])) for v in values if v["pdmp/coefficient/visual"]]
    assert visual == [(0, 1.0), (1, 1.0), (2, 1.0), (3, 4.0), (4, 4.0), (5, 4.0)]
    norms = [float(v["pdmp/grad_norm/audio"]) for v in values if v["pdmp/grad_norm/audio"]]
    assert len(norms) == 6 and all(n > 0 for n in norms)
    report = json.loads((Path(logger.log_dir) / "pdmp_probe_report.json").read_text())
    assert report["source"] == "given" and report["ranking"] == ["visual", "audio"] and "scores" not in report


class MomentumModel(TwoModalityModel):
    """SGD with momentum; optionally per-modality learning rates."""

    def __init__(self, lrs: dict[str, float] | None = None) -> None:
        super().__init__()
        self.lrs = lrs or {}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        groups = [
            {"params": list(self.visual_encoder.parameters()), "lr": self.lrs.get("visual", 0.1)},
            {"params": list(self.audio_encoder.parameters()), "lr": self.lrs.get("audio", 0.1)},
            {"params": list(self.head.parameters()), "lr": 0.1},
        ]
        return torch.optim.SGD(groups, momentum=0.9)


def test_update_mechanism_equals_a_per_modality_learning_rate() -> None:
    torch.manual_seed(0)
    model = MomentumModel()
    scaled_lr = copy.deepcopy(model)
    scaled_lr.lrs = {"visual": 0.1 * K["visual"], "audio": 0.1 * K["audio"]}
    expected = moves(scaled_lr, max_steps=3)
    modulated = moves(model, callbacks=[pdmp(mechanism="update")], max_steps=3)
    for name, delta in modulated.items():
        torch.testing.assert_close(delta, expected[name], rtol=1e-6, atol=1e-12, msg=name)


@pytest.mark.parametrize("strategy", [FSDPStrategy, ModelParallelStrategy])
def test_sharded_strategies_are_refused_in_setup_before_any_hook(strategy: type) -> None:
    fake = SimpleNamespace(strategy=strategy.__new__(strategy))
    model = TwoModalityModel()
    forced = pdmp(mechanism="activation")
    with pytest.raises(PDMPConfigurationError, match=r"`mechanism`: got 'activation'.*under FSDP"):
        forced.setup(fake, model, "fit")  # type: ignore[arg-type]
    pareto = MMParetoCallback({"audio": "audio_encoder", "visual": "visual_encoder"})
    with pytest.raises(PDMPConfigurationError, match=r"`Trainer\(strategy=...\)`: got '\w+Strategy'.*MMParetoCallback"):
        pareto.setup(fake, model, "fit")  # type: ignore[arg-type]
    assert not forced.is_modulating and not pareto.is_modulating
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    pdmp().setup(fake, model, "fit")  # type: ignore[arg-type]  # auto picks a sharding-safe mechanism later


def test_fsdp1_refuses_the_probes_in_setup_but_not_a_given_ranking() -> None:
    fake = SimpleNamespace(strategy=FSDPStrategy())
    probing = PDMPCallback({"audio": "audio_encoder", "visual": "visual_encoder"})
    with pytest.raises(
        PDMPConfigurationError, match=r"got 'FSDPStrategy, with probes'; expected ModelParallelStrategy"
    ):
        probing.setup(fake, TwoModalityModel(), "fit")  # type: ignore[arg-type]
    pdmp().setup(fake, TwoModalityModel(), "fit")  # type: ignore[arg-type]


def test_fsdp2_keeps_an_unsharded_copy_of_each_encoder_for_the_probes() -> None:
    model = TwoModalityModel()
    callback = PDMPCallback({"audio": "audio_encoder", "visual": "visual_encoder"})
    callback.setup(SimpleNamespace(strategy=ModelParallelStrategy()), model, "fit")  # type: ignore[arg-type]
    assert sorted(callback._probe_templates) == ["audio_encoder", "visual_encoder"]
    template = callback._probe_templates["audio_encoder"]
    assert template is not model.audio_encoder
    assert all(torch.equal(a, b) for a, b in zip(template.parameters(), model.audio_encoder.parameters(), strict=True))
    callback.setup(SimpleNamespace(strategy=SingleDeviceStrategy("cpu")), model, "fit")  # type: ignore[arg-type]
    assert callback._probe_templates == {}  # nothing copied where deep copies work


def test_a_sharded_encoder_without_its_copy_is_an_error_with_the_ways_out(monkeypatch: pytest.MonkeyPatch) -> None:
    from pdmp_lightning.modality import parse_modality_specs, resolve_modality_groups
    from pdmp_lightning.probing import probe

    model = TwoModalityModel()
    groups = resolve_modality_groups(
        model, parse_modality_specs({"audio": "audio_encoder", "visual": "visual_encoder"})
    )
    monkeypatch.setattr(probe, "is_sharded", lambda module: True)
    with pytest.raises(
        PDMPConfigurationError, match=r"`audio_encoder`: got 'a sharded module .*probe_encoder.*ranking"
    ):
        probe.copy_encoder(model, "audio", groups["audio"])
