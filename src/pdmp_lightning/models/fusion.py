"""The four fusions the PDMP paper evaluates, for any number of modalities.

Each fusion maps modality features ``{name: [B, d_name]}`` to class logits ``[B, C]``:

- ``concat``: one linear head on the concatenated features.
- ``sum``: one linear head per modality, logits summed.
- ``film``: a conditioning modality produces a scale and a shift (FiLM) applied to the projected
  sum of the other modalities, then a linear head.
- ``gated``: a conditioning modality produces a sigmoid gate applied to the projected sum of the
  other modalities, then a linear head.

With two modalities ``film`` and ``gated`` match the FiLM and gated fusions of the OGM-GE code
base; with more, the conditioning modality acts on the sum of the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, get_args

import torch
from torch import Tensor, nn

FusionName = Literal["concat", "sum", "film", "gated"]
FUSIONS: tuple[str, ...] = get_args(FusionName)


class Fusion(nn.Module):
    """Base: modality features in, logits out.

    Args:
        feature_dims: Modality -> feature size, in the order the modalities are fused.
        num_classes: Number of classes.

    Examples:
        >>> fusion = build_fusion("sum", {"audio": 4, "visual": 6}, num_classes=3)
        >>> isinstance(fusion, Fusion)
        True
    """

    def __init__(self, feature_dims: Mapping[str, int], num_classes: int) -> None:
        super().__init__()
        self.feature_dims = dict(feature_dims)
        self.num_classes = num_classes

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        raise NotImplementedError


class ConcatFusion(Fusion):
    """``W [z_1; ...; z_M] + b``: the late-fusion linear head most balancing methods assume.

    Examples:
        >>> fusion = ConcatFusion({"audio": 4, "visual": 6}, num_classes=3)
        >>> features = {"audio": torch.randn(2, 4), "visual": torch.randn(2, 6)}
        >>> fusion(features).shape
        torch.Size([2, 3])
        >>> shares = fusion.split_logits(features)
        >>> torch.allclose(sum(shares.values()), fusion(features), atol=1e-6)
        True
    """

    def __init__(self, feature_dims: Mapping[str, int], num_classes: int) -> None:
        super().__init__(feature_dims, num_classes)
        self.head = nn.Linear(sum(self.feature_dims.values()), num_classes)

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        logits: Tensor = self.head(torch.cat([features[m] for m in self.feature_dims], dim=1))
        return logits

    def split_logits(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Each modality's share of the logits, ``W[:, S_m] z_m + b / M``; they sum to the fused logits."""
        shares: dict[str, Tensor] = {}
        start, count = 0, len(self.feature_dims)
        for modality, dim in self.feature_dims.items():
            weight = self.head.weight[:, start : start + dim]
            shares[modality] = features[modality] @ weight.T + self.head.bias / count
            start += dim
        return shares


class SumFusion(Fusion):
    """``sum_m (W_m z_m + b_m)``: one linear head per modality.

    Examples:
        >>> fusion = SumFusion({"audio": 4, "visual": 6}, num_classes=3)
        >>> features = {"audio": torch.randn(2, 4), "visual": torch.randn(2, 6)}
        >>> sorted(fusion.split_logits(features))
        ['audio', 'visual']
    """

    def __init__(self, feature_dims: Mapping[str, int], num_classes: int) -> None:
        super().__init__(feature_dims, num_classes)
        self.heads = nn.ModuleDict({m: nn.Linear(d, num_classes) for m, d in self.feature_dims.items()})

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        return torch.stack([self.heads[m](features[m]) for m in self.feature_dims]).sum(dim=0)

    def split_logits(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Each modality's own head's logits; they sum to the fused logits."""
        return {m: self.heads[m](features[m]) for m in self.feature_dims}


class _ConditionedFusion(Fusion):
    """Shared by FiLM and gated fusion: a condition modality acting on the projected others."""

    def __init__(
        self, feature_dims: Mapping[str, int], num_classes: int, hidden: int, condition: str | None, outputs: int
    ) -> None:
        super().__init__(feature_dims, num_classes)
        names = list(self.feature_dims)
        self.condition = condition if condition is not None else names[0]
        if self.condition not in self.feature_dims:
            raise ValueError(f"fusion condition {self.condition!r} is not one of the modalities {names}")
        others = [m for m in names if m != self.condition]
        self.projections = nn.ModuleDict({m: nn.Linear(self.feature_dims[m], hidden) for m in others})
        self.conditioner = nn.Linear(self.feature_dims[self.condition], outputs * hidden)
        self.head = nn.Linear(hidden, num_classes)

    def _others(self, features: Mapping[str, Tensor]) -> Tensor:
        return torch.stack([projection(features[m]) for m, projection in self.projections.items()]).sum(dim=0)


class FiLMFusion(_ConditionedFusion):
    """``head(gamma(z_c) * h + beta(z_c))`` with ``h`` the projected sum of the other modalities.

    Examples:
        >>> widths = {"audio": 4, "visual": 6}
        >>> fusion = FiLMFusion(widths, num_classes=3, hidden=8, condition="visual")
        >>> fusion({"audio": torch.randn(2, 4), "visual": torch.randn(2, 6)}).shape
        torch.Size([2, 3])
    """

    def __init__(
        self, feature_dims: Mapping[str, int], num_classes: int, hidden: int = 256, condition: str | None = None
    ) -> None:
        super().__init__(feature_dims, num_classes, hidden, condition, outputs=2)

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        gamma, beta = self.conditioner(features[self.condition]).chunk(2, dim=1)
        logits: Tensor = self.head(gamma * self._others(features) + beta)
        return logits


class GatedFusion(_ConditionedFusion):
    """``head(sigmoid(g(z_c)) * h)`` with ``h`` the projected sum of the other modalities.

    Examples:
        >>> fusion = GatedFusion({"audio": 4, "visual": 6}, num_classes=3, hidden=8)
        >>> features = {"audio": torch.randn(2, 4), "visual": torch.randn(2, 6)}
        >>> fusion.condition, fusion(features).shape
        ('audio', torch.Size([2, 3]))
    """

    def __init__(
        self, feature_dims: Mapping[str, int], num_classes: int, hidden: int = 256, condition: str | None = None
    ) -> None:
        super().__init__(feature_dims, num_classes, hidden, condition, outputs=1)

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        gate = torch.sigmoid(self.conditioner(features[self.condition]))
        logits: Tensor = self.head(gate * self._others(features))
        return logits


def build_fusion(
    name: str, feature_dims: Mapping[str, int], num_classes: int, hidden: int = 256, condition: str | None = None
) -> Fusion:
    """Builds the fusion called ``name`` (one of ``concat``, ``sum``, ``film``, ``gated``).

    Examples:
        >>> type(build_fusion("film", {"audio": 4, "visual": 6}, num_classes=3)).__name__
        'FiLMFusion'
    """
    if name == "concat":
        return ConcatFusion(feature_dims, num_classes)
    if name == "sum":
        return SumFusion(feature_dims, num_classes)
    if name == "film":
        return FiLMFusion(feature_dims, num_classes, hidden, condition)
    if name == "gated":
        return GatedFusion(feature_dims, num_classes, hidden, condition)
    raise ValueError(f"unknown fusion {name!r}; expected one of {list(FUSIONS)}")
