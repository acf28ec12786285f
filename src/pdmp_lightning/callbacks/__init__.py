"""The Lightning callbacks."""

from pdmp_lightning.callbacks.base import ModalityModulationCallback
from pdmp_lightning.callbacks.monitor import ModalityGradientMonitor
from pdmp_lightning.callbacks.pdmp import PDMPCallback

__all__ = ["ModalityGradientMonitor", "ModalityModulationCallback", "PDMPCallback"]
