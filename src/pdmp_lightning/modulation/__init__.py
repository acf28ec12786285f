"""Coefficients and the mechanisms that apply them."""

from pdmp_lightning.modulation.adaptation import Adaptation, BoundedBoost, HypergradientBoost, LossBackoff
from pdmp_lightning.modulation.coefficients import CoefficientFormula, priority_coefficients
from pdmp_lightning.modulation.mechanisms import (
    Mechanism,
    Modulator,
    build_modulator,
    is_learning_rate_linear,
    is_scale_invariant,
    register_learning_rate_linear,
)

__all__ = [
    "Adaptation",
    "BoundedBoost",
    "CoefficientFormula",
    "HypergradientBoost",
    "LossBackoff",
    "Mechanism",
    "Modulator",
    "build_modulator",
    "is_learning_rate_linear",
    "is_scale_invariant",
    "priority_coefficients",
    "register_learning_rate_linear",
]
