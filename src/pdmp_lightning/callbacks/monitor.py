"""Per-modality gradient norms for any run, modulated or not."""

from __future__ import annotations

from collections.abc import Mapping

from pdmp_lightning.callbacks.base import ModalityModulationCallback
from pdmp_lightning.modality import ModalitySpecInput
from pdmp_lightning.types import NonNegativeInt


class ModalityGradientMonitor(ModalityModulationCallback):
    """Logs ``modality/grad_norm/<modality>`` every ``log_every_n_steps`` and changes nothing.

    Put it on a joint-training run to compare its per-modality gradient norms with a PDMP run
    (which logs the same under ``pdmp/``).

    Args:
        modalities: Modality name -> dotted submodule path(s) or ``"re:<regex>"`` patterns, as for
            ``PDMPCallback``.
        log_every_n_steps: Logging interval; None uses the Trainer's.

    Examples:
        >>> monitor = ModalityGradientMonitor({"audio": "enc.a", "visual": "enc.v"})
        >>> monitor.modality_names
        ['audio', 'visual']
    """

    own_mechanism = "none"  # it registers nothing: no modulator, only the logs

    def __init__(
        self, modalities: Mapping[str, ModalitySpecInput], log_every_n_steps: NonNegativeInt | None = None
    ) -> None:
        super().__init__(modalities, log_every_n_steps=log_every_n_steps, log_prefix="modality")
