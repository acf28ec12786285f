"""Unimodal probes that rank the modalities."""

from pdmp_lightning.probing.probe import UnimodalProbe
from pdmp_lightning.probing.runner import ProbeOutcome, ProbeRunner, ProbeSettings, rank_by_score

__all__ = ["ProbeOutcome", "ProbeRunner", "ProbeSettings", "UnimodalProbe", "rank_by_score"]
