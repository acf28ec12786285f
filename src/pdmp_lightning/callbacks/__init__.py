"""The Lightning callbacks."""

from pdmp_lightning.callbacks.agm import AGMCallback
from pdmp_lightning.callbacks.balancing import BalancingCallback
from pdmp_lightning.callbacks.base import ModalityModulationCallback
from pdmp_lightning.callbacks.mmpareto import MMParetoCallback
from pdmp_lightning.callbacks.monitor import ModalityGradientMonitor
from pdmp_lightning.callbacks.ogm_ge import OGMGECallback
from pdmp_lightning.callbacks.opm import OPMCallback
from pdmp_lightning.callbacks.pdmp import PDMPCallback

__all__ = [
    "AGMCallback",
    "BalancingCallback",
    "MMParetoCallback",
    "ModalityGradientMonitor",
    "ModalityModulationCallback",
    "OGMGECallback",
    "OPMCallback",
    "PDMPCallback",
]
