"""pdmp-lightning: Performance-Dominant Modality Prioritization and its baselines as Lightning callbacks."""

from pdmp_lightning.callbacks import ModalityGradientMonitor, ModalityModulationCallback, PDMPCallback
from pdmp_lightning.errors import PDMPConfigurationError
from pdmp_lightning.modulation.coefficients import priority_coefficients

__all__ = [
    "ModalityGradientMonitor",
    "ModalityModulationCallback",
    "PDMPCallback",
    "PDMPConfigurationError",
    "__version__",
    "priority_coefficients",
]

__version__ = "0.1.0"
