"""Leaving the global random number generators exactly as they were."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch


@contextmanager
def preserved_rng_state() -> Iterator[None]:
    """Runs a block and then restores the Python, NumPy, torch CPU and CUDA generators.

    Probing draws random numbers (shuffling, dropout, head initialisation); restoring the state
    afterwards makes a probed run train exactly like one given the same ranking up front.
    """
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    if cuda:
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        yield
    finally:
        random.setstate(state["python"])
        np.random.set_state(state["numpy"])
        torch.set_rng_state(state["torch"])
        if cuda:
            torch.cuda.set_rng_state_all(state["cuda"])
