"""Unimodal probes that rank the modalities."""

from pdmp_lightning.probing.outcome import ProbeCost, ProbeCurve, ProbeOutcome, rank_by_score
from pdmp_lightning.probing.probe import UnimodalProbe
from pdmp_lightning.probing.runner import ProbeRunner
from pdmp_lightning.probing.settings import ProbeSettings

__all__ = [
    "ProbeCost",
    "ProbeCurve",
    "ProbeOutcome",
    "ProbeRunner",
    "ProbeSettings",
    "UnimodalProbe",
    "rank_by_score",
]
