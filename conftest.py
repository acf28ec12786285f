"""Doctests in ``src/`` draw random tensors: seed each one so an example never depends on the draw."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seeded_doctest(request: pytest.FixtureRequest) -> None:
    if isinstance(request.node, pytest.DoctestItem):
        torch.manual_seed(0)
