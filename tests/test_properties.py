"""Property-based checks of the pure pieces: coefficient formulas, ranking, modality resolution."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from pdmp_lightning.errors import PDMPConfigurationError
from pdmp_lightning.modality import parse_modality_specs, resolve_modality_groups, unassigned_parameter_names
from pdmp_lightning.modulation.coefficients import priority_coefficients
from pdmp_lightning.probing.outcome import rank_by_score

names = st.lists(st.text("abcdefgh", min_size=1, max_size=4), min_size=2, max_size=6, unique=True)
gammas = st.floats(min_value=1e-3, max_value=1e3, allow_nan=False)


@given(names, gammas, gammas)
def test_coefficient_formulas(ranking: list[str], gamma_p: float, gamma_r: float) -> None:
    constant = priority_coefficients(ranking, gamma_p, gamma_r, "constant")
    offset = priority_coefficients(ranking, gamma_p, gamma_r, "offset")
    normalized = priority_coefficients(ranking, gamma_p, gamma_r, "normalized")
    assert list(constant) == list(offset) == list(normalized) == ranking
    assert constant[ranking[0]] == gamma_p and all(constant[m] == gamma_r for m in ranking[1:])
    assert all(offset[m] == 1.0 + constant[m] for m in ranking)
    assert math.isclose(sum(normalized.values()), len(ranking), rel_tol=1e-9)
    # Normalising keeps the ratio between the dominant modality and the others.
    assert math.isclose(normalized[ranking[0]] / normalized[ranking[1]], gamma_p / gamma_r, rel_tol=1e-9)


@given(st.dictionaries(st.text("abcxyz", min_size=1, max_size=3), st.sampled_from([0.1, 0.5, 0.9]), min_size=1))
def test_ranking_is_a_sorted_permutation_with_ties_by_name(scores: dict[str, float]) -> None:
    ranking = rank_by_score(scores)
    assert sorted(ranking) == sorted(scores)
    for first, second in itertools.pairwise(ranking):
        assert scores[first] > scores[second] or (scores[first] == scores[second] and first < second)


def _tree(widths: list[int]) -> nn.Module:
    root = nn.Module()
    for index, width in enumerate(widths):
        block = nn.Sequential(*[nn.Linear(2, 2) for _ in range(width)])
        root.add_module(f"block{index}", block)
    return root


@given(st.lists(st.integers(1, 3), min_size=3, max_size=5), st.data())
def test_resolution_is_disjoint_and_complete(widths: list[int], data: st.DataObject) -> None:
    module = _tree(widths)
    chosen = data.draw(st.lists(st.sampled_from(range(len(widths))), min_size=2, max_size=len(widths), unique=True))
    specs = parse_modality_specs({f"m{i}": f"block{i}" for i in chosen})
    groups = resolve_modality_groups(module, specs)
    seen: set[str] = set()
    for index in chosen:
        names = set(groups[f"m{index}"].parameter_names)
        assert names == {n for n, _ in module.named_parameters() if n.startswith(f"block{index}.")}
        assert not names & seen
        seen |= names
    untouched = set(unassigned_parameter_names(module, groups))
    assert untouched | seen == {n for n, _ in module.named_parameters()} and not untouched & seen


@given(st.lists(st.integers(1, 3), min_size=2, max_size=4))
def test_a_parent_and_its_child_in_two_modalities_overlap(widths: list[int]) -> None:
    module = _tree(widths)
    specs = parse_modality_specs({"parent": "block0", "child": "block0.0"})
    with pytest.raises(PDMPConfigurationError, match="disjoint"):
        resolve_modality_groups(module, specs)
