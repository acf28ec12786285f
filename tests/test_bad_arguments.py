"""Every bad argument raises an error naming the argument, the value and what is allowed."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from pdmp_lightning import PDMPCallback, PDMPConfigurationError
from tests.helpers import MODALITIES, TwoModalityModel, trainer


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        (
            {"modalities": {"audio": "audio_encoder"}},
            r"`modalities`: got \{'audio': 'audio_encoder'\}; expected .*at least two",
        ),
        (
            {"modalities": ["audio_encoder", "visual_encoder"]},
            r"`modalities`: got \['audio_encoder'.*expected a mapping",
        ),
        ({"modalities": {"audio": "", "visual": "v"}}, r"`modalities\['audio'\]`: got ''"),
        (
            {"modalities": {"audio": "re:(", "visual": "v"}},
            r"`modalities\['audio'\]`: got 're:\('.*valid regular expression",
        ),
        ({"gamma_p": 0.0}, r"`gamma_p`: got 0.0; expected a finite number > 0"),
        ({"gamma_p": -2}, r"`gamma_p`: got -2"),
        ({"gamma_p": math.nan}, r"`gamma_p`: got nan"),
        ({"gamma_r": math.inf}, r"`gamma_r`: got inf"),
        ({"gamma_r": "1"}, r"`gamma_r`: got '1'"),
        (
            {"ranking": ["visual", "speech"]},
            r"`ranking`: got \['visual', 'speech'\].*unknown modality names \['speech'\]",
        ),
        ({"ranking": ["visual", "visual"]}, r"`ranking`: got \['visual', 'visual'\].*repeated or missing"),
        ({"ranking": "visual"}, r"`ranking`: got 'visual'; expected each of \['audio', 'visual'\]"),
        ({"inputs": {"speech": "x"}}, r"`inputs`: got \{'speech': 'x'\}.*unknown \['speech'\]"),
        ({"inputs": {"audio": 1.5}}, r"`inputs\['audio'\]`: got 1.5"),
        ({"target": None}, r"`target`: got None"),
        ({"start_epoch": -1}, r"`start_epoch`: got -1; expected an integer >= 0"),
        ({"start_epoch": 3, "end_epoch": 3}, r"`end_epoch`: got 3; expected None or an integer > start_epoch \(3\)"),
        ({"mechanism": "lr"}, r"`mechanism`: got 'lr'; expected one of \['auto', 'activation'"),
        ({"coefficient_formula": "ratio"}, r"`coefficient_formula`: got 'ratio'"),
        (
            {"probes": {"metric": "auroc"}},
            r"`probes.metric`: got 'auroc'; expected None, one of \['accuracy', 'macro_f1'",
        ),
        ({"probes": {"max_epochs": 0}}, r"`probes.max_epochs`: got 0; expected a finite number > 0"),
        ({"probes": {"max_epochs": float("inf")}}, r"`probes.max_epochs`: got inf"),
        ({"probes": {"min_epochs": -1}}, r"`probes.min_epochs`: got -1; expected a finite number of probe epochs >= 0"),
        ({"probes": {"val_check_interval": 0}}, r"`probes.val_check_interval`: got 0; .*Hint: 0.5 validates twice"),
        ({"probes": {"cost_target": 0}}, r"`probes.cost_target`: got 0; expected a finite number > 0 \(share of the"),
        ({"probes": {"cost_target": True}}, r"`probes.cost_target`: got True; expected a finite number > 0"),
        ({"probes": {"cost_target": "all"}}, r"`probes.cost_target`: got 'all'; expected .* or None"),
        ({"probes": {"patience": 1.5}}, r"`probes.patience`: got 1.5"),
        ({"probes": {"val_fraction": 1.0}}, r"`probes.val_fraction`: got 1.0; expected a number in \(0, 1\)"),
        ({"probes": {"lr": -1e-3}}, r"`probes.lr`: got -0.001"),
        ({"probes": {"min_delta": -0.1}}, r"`probes.min_delta`: got -0.1"),
        ({"probes": {"num_classes": 1}}, r"`probes.num_classes`: got 1; expected None or an integer >= 2"),
        (
            {"probes": {"budget": 0.15}},
            r"`probes`: got \{'budget': 0.15\}; expected a ProbeSettings .* unknown \['budget'\]",
        ),
        ({"probes": 0.15}, r"`probes`: got 0.15; expected None, a ProbeSettings or a dict of its fields"),
        ({"log_every_n_steps": -5}, r"`log_every_n_steps`: got -5"),
        ({"report_path": ""}, r"`report_path`: got ''; expected None \(the logger's directory\) or a file path"),
        ({"report_path": 3}, r"`report_path`: got 3"),
    ],
)
def test_constructor_rejects(kwargs: dict[str, Any], pattern: str) -> None:
    options = {"modalities": MODALITIES, **kwargs}
    with pytest.raises(PDMPConfigurationError, match=pattern):
        PDMPCallback(**options)


@pytest.mark.parametrize(
    ("modalities", "pattern"),
    [
        (
            {"audio": "audio_encodr", "visual": "visual_encoder"},
            r"`modalities\['audio'\]`: got 'audio_encodr'; expected a dotted path of an existing submodule\. "
            r"Hint: did you mean \['audio_encoder'.*"
            r"top-level submodules are \['audio_encoder', 'visual_encoder', 'head'\]",
        ),
        (
            {"audio": "backbones.audio", "visual": "visual_encoder"},
            r"`modalities\['audio'\]`: got 'backbones.audio'.*top-level submodules",
        ),
        (
            {"audio": "re:^speech", "visual": "visual_encoder"},
            r"`modalities\['audio'\]`: got 're:\^speech'; "
            r"expected a regex .* matching at least one trainable parameter",
        ),
        (
            {"audio": "audio_encoder", "visual": ["visual_encoder", "re:encoder\\.0\\.weight"]},
            r"`modalities\['visual'\]`: got 'audio_encoder.0.weight'; "
            r"expected disjoint modality groups.*modalities\['audio'\]",
        ),
        (
            {"audio": "audio_encoder", "all": ""},
            r"`modalities\['all'\]`: got ''",
        ),
    ],
)
def test_module_dependent_errors_leave_nothing_behind(modalities: dict[str, Any], pattern: str, tmp_path: Path) -> None:
    model = TwoModalityModel()
    with pytest.raises(PDMPConfigurationError, match=pattern):
        callback = PDMPCallback(modalities)
        trainer(callbacks=[callback], logger=CSVLogger(tmp_path)).fit(model)
    assert not list(tmp_path.rglob("*probe*"))
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_frozen_submodule_is_rejected() -> None:
    model = TwoModalityModel()
    model.audio_encoder.requires_grad_(False)
    with pytest.raises(
        PDMPConfigurationError,
        match=r"`modalities\['audio'\]`: got 'audio_encoder'; expected a submodule with at least one trainable",
    ):
        trainer(callbacks=[PDMPCallback(MODALITIES)]).fit(model)


def test_nested_paths_of_one_modality_count_once() -> None:
    model = TwoModalityModel()
    model.extra = nn.Linear(2, 2)
    callback = PDMPCallback(
        {"audio": ["audio_encoder", "audio_encoder.0"], "visual": "visual_encoder"}, ranking=["audio", "visual"]
    )
    trainer(callbacks=[callback]).fit(model)
    assert callback.groups["audio"].module_paths == ("audio_encoder",)
    assert len(callback.groups["audio"].parameter_names) == 4
