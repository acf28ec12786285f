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
            :class:`~pdmp_lightning.PDMPCallback`.
        log_every_n_steps: Logging interval; None uses the Trainer's.

    Example:
        >>> monitor = ModalityGradientMonitor({"audio": "encoders.audio", "visual": "encoders.visual"})
        >>> monitor.modality_names
        ['audio', 'visual']
    """

    def __init__(
        self, modalities: Mapping[str, ModalitySpecInput], log_every_n_steps: NonNegativeInt | None = None
    ) -> None:
        # The "grad" mechanism registers no hook and skips multipliers of 1: nothing is modulated.
        super().__init__(modalities, mechanism="grad", log_every_n_steps=log_every_n_steps, log_prefix="modality")
