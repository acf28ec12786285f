"""Restricted number types for constructor signatures.

In Python they are plain ``int`` / ``float``; for jsonargparse (the CLI, YAML configs) they make an
out-of-range value fail at parse time with a message naming the key.
"""

from __future__ import annotations

from jsonargparse.typing import (
    NonNegativeFloat,
    NonNegativeInt,
    OpenUnitInterval,
    PositiveFloat,
    PositiveInt,
    restricted_number_type,
)

#: A float in (0, 1].
Fraction = restricted_number_type("Fraction", float, [(">", 0), ("<=", 1)])

__all__ = ["Fraction", "NonNegativeFloat", "NonNegativeInt", "OpenUnitInterval", "PositiveFloat", "PositiveInt"]
