"""PDMP's asymmetric coefficients: one multiplier per modality, from the ranking."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

from pdmp_lightning.errors import config_error, is_number

CoefficientFormula = Literal["constant", "offset", "normalized"]
COEFFICIENT_FORMULAS: tuple[str, ...] = get_args(CoefficientFormula)


def check_gamma(argument: str, value: float) -> float:
    """Returns ``value`` as a float if it is finite and positive, else raises naming ``argument``."""
    if not is_number(value, above=0):
        raise config_error(
            argument,
            value,
            "a finite number > 0",
            "the paper uses gamma_p around 10 for the dominant modality and gamma_r <= 1 for the others.",
        )
    return float(value)


def priority_coefficients(
    ranking: Sequence[str], gamma_p: float, gamma_r: float, formula: CoefficientFormula = "constant"
) -> dict[str, float]:
    """Multipliers for each modality: the first of ``ranking`` is the performance-dominant one.

    - ``"constant"``: k = gamma_p for the dominant modality, k = gamma_r for every other.
    - ``"offset"``: k = 1 + gamma (gamma = 0 leaves a modality untouched).
    - ``"normalized"``: k_m = M * gamma_m / sum_j gamma_j, which keeps the coefficients' sum at M.

    Args:
        ranking: Modality names, best first.
        gamma_p: The dominant modality's gamma.
        gamma_r: Every other modality's gamma.
        formula: One of ``"constant"``, ``"offset"``, ``"normalized"``.

    Returns:
        Modality name -> multiplier, in ranking order.

    Examples:
        >>> priority_coefficients(["visual", "audio"], gamma_p=10.0, gamma_r=0.5)
        {'visual': 10.0, 'audio': 0.5}
        >>> ranking = ["visual", "audio"]
        >>> priority_coefficients(ranking, gamma_p=3.0, gamma_r=1.0, formula="normalized")
        {'visual': 1.5, 'audio': 0.5}
    """
    if formula not in COEFFICIENT_FORMULAS:
        raise config_error("coefficient_formula", formula, f"one of {list(COEFFICIENT_FORMULAS)}")
    gammas = {name: (gamma_p if index == 0 else gamma_r) for index, name in enumerate(ranking)}
    if formula == "constant":
        return gammas
    if formula == "offset":
        return {name: 1.0 + gamma for name, gamma in gammas.items()}
    total = sum(gammas.values())
    return {name: len(gammas) * gamma / total for name, gamma in gammas.items()}
