"""pdmp-lightning: Performance-Dominant Modality Prioritization and its baselines as Lightning callbacks."""

from pdmp_lightning.callbacks import (
    AGMCallback,
    BalancingCallback,
    MMParetoCallback,
    ModalityGradientMonitor,
    ModalityModulationCallback,
    OGMGECallback,
    OPMCallback,
    PDMPCallback,
)
from pdmp_lightning.errors import PDMPConfigurationError, ProbeRankingWarning
from pdmp_lightning.modulation.coefficients import priority_coefficients
from pdmp_lightning.probing.settings import ProbeSettings

__all__ = [
    "AGMCallback",
    "BalancingCallback",
    "MMParetoCallback",
    "ModalityGradientMonitor",
    "ModalityModulationCallback",
    "OGMGECallback",
    "OPMCallback",
    "PDMPCallback",
    "PDMPConfigurationError",
    "ProbeRankingWarning",
    "ProbeSettings",
    "__version__",
    "priority_coefficients",
]

__version__ = "0.1.0"
