"""Modality groups: which trainable parameters of a LightningModule belong to which modality.

A modality is given either by dotted submodule paths (``"backbones.visual"``) or by regular
expressions over ``named_parameters()`` names, written ``"re:<regex>"`` and matched with
``re.search``. Specs are checked for form when a callback is built
(``parse_modality_specs``) and resolved against the module once it is known
(``resolve_modality_groups``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from torch import nn

from pdmp_lightning.errors import config_error

REGEX_PREFIX = "re:"

ModalitySpecInput = str | Sequence[str]


@dataclass(frozen=True)
class ModalitySpec:
    """One modality's parameter selection, as the user wrote it.

    Attributes:
        name: The modality's name.
        paths: Dotted submodule paths, in the order given.
        patterns: Regular expressions over parameter names.
    """

    name: str
    paths: tuple[str, ...]
    patterns: tuple[str, ...]

    def as_strings(self) -> list[str]:
        """The spec as the user wrote it (paths, then ``re:`` patterns)."""
        return list(self.paths) + [REGEX_PREFIX + pattern for pattern in self.patterns]


@dataclass(frozen=True)
class ModalityGroup:
    """A modality's resolved parameters.

    Attributes:
        name: The modality's name.
        parameter_names: Names (as in ``named_parameters()``) of its trainable parameters.
        modules: The submodules given by path, in order (empty when a regex was used).
        module_paths: Their dotted paths.
        tied_outside: Whether one of its parameters is also registered outside ``modules``.
    """

    name: str
    parameter_names: tuple[str, ...]
    modules: tuple[nn.Module, ...]
    module_paths: tuple[str, ...]
    tied_outside: bool = False

    @property
    def output_scaling_is_exact(self) -> bool:
        """Whether scaling the gradient at the submodules' outputs scales exactly these parameters' gradients.

        True when the group is given by submodule paths only and none of its parameters is also
        registered (tied) under a module outside them.
        """
        return bool(self.modules) and not self.tied_outside


def parse_modality_specs(modalities: Mapping[str, ModalitySpecInput]) -> dict[str, ModalitySpec]:
    """Checks the form of a ``modalities`` argument and compiles its regexes.

    Args:
        modalities: Modality name -> a dotted submodule path, ``"re:<regex>"``, or a list of them.

    Returns:
        Modality name -> spec, in the order given.

    Raises:
        PDMPConfigurationError: Fewer than two modalities, an empty or non-string name or spec, or a
            regex that does not compile.
    """
    allowed = "a mapping of at least two modality names to submodule paths or 're:<regex>' patterns"
    example = "modalities={'audio': 'audio_encoder', 'visual': 're:^visual_net\\.'}"
    if not isinstance(modalities, Mapping):
        raise config_error("modalities", modalities, allowed, f"for example {example}")
    if len(modalities) < 2:
        raise config_error(
            "modalities",
            dict(modalities),
            allowed,
            "PDMP prioritises one modality over the others, so it needs at least two; "
            "with one modality train without the callback.",
        )
    specs: dict[str, ModalitySpec] = {}
    for name, raw in modalities.items():
        if not isinstance(name, str) or not name:
            raise config_error("modalities", name, "non-empty string modality names")
        entries = [raw] if isinstance(raw, str) else list(raw) if isinstance(raw, Sequence) else None
        if not entries or not all(isinstance(entry, str) and entry.strip() for entry in entries):
            raise config_error(f"modalities[{name!r}]", raw, "a non-empty path string, 're:<regex>', or a list of them")
        paths: list[str] = []
        patterns: list[str] = []
        for entry in entries:
            if entry.startswith(REGEX_PREFIX):
                pattern = entry[len(REGEX_PREFIX) :]
                try:
                    re.compile(pattern)
                except re.error as err:
                    raise config_error(f"modalities[{name!r}]", entry, "a valid regular expression", str(err)) from None
                patterns.append(pattern)
            else:
                paths.append(entry.strip().strip("."))
        specs[name] = ModalitySpec(name, tuple(paths), tuple(patterns))
    return specs


def resolve_modality_groups(module: nn.Module, specs: Mapping[str, ModalitySpec]) -> dict[str, ModalityGroup]:
    """Resolves modality specs against a module.

    Args:
        module: The LightningModule (unwrapped).
        specs: The parsed specs.

    Returns:
        Modality name -> group, in the order of ``specs``.

    Raises:
        PDMPConfigurationError: A path that does not exist, a spec that matches no trainable
            parameter, or two modalities sharing a parameter.
    """
    named_parameters = dict(module.named_parameters())
    canonical_name = {id(parameter): name for name, parameter in named_parameters.items()}
    trainable = {name for name, parameter in named_parameters.items() if parameter.requires_grad}
    all_names = [(n, id(p)) for n, p in module.named_parameters(remove_duplicate=False)]
    groups: dict[str, ModalityGroup] = {}
    for name, spec in specs.items():
        argument = f"modalities[{name!r}]"
        selected: dict[str, None] = {}
        modules: list[nn.Module] = []
        for path in spec.paths:
            submodule = _get_submodule(module, path, argument)
            modules.append(submodule)
            owned = [canonical_name[id(p)] for p in submodule.parameters()]
            if not any(n in trainable for n in owned):
                raise config_error(
                    argument,
                    path,
                    "a submodule with at least one trainable parameter",
                    f"'{path}' has {len(owned)} parameters, none with requires_grad=True.",
                )
            selected.update(dict.fromkeys(owned))
        for pattern in spec.patterns:
            matched = [n for n in named_parameters if re.search(pattern, n) and n in trainable]
            if not matched:
                raise config_error(
                    argument,
                    REGEX_PREFIX + pattern,
                    "a regex (re.search) matching at least one trainable parameter name",
                    f"some parameter names: {_sample(trainable)}",
                )
            selected.update(dict.fromkeys(matched))
        parameter_names = tuple(n for n in selected if n in trainable)
        outer_modules, outer_paths = _outermost(modules, spec.paths)
        selected_ids = {id(named_parameters[n]) for n in parameter_names}
        prefixes = tuple(path + "." for path in outer_paths)
        # A parameter also registered (tied) outside the group's submodules can receive gradient
        # through a path the submodules' outputs do not see.
        tied_outside = any(pid in selected_ids and not n.startswith(prefixes) for n, pid in all_names)
        groups[name] = ModalityGroup(
            name=name,
            parameter_names=parameter_names,
            modules=() if spec.patterns else outer_modules,
            module_paths=() if spec.patterns else outer_paths,
            tied_outside=tied_outside,
        )
    _check_disjoint(groups, named_parameters)
    return groups


def unassigned_parameter_names(module: nn.Module, groups: Mapping[str, ModalityGroup]) -> list[str]:
    """Trainable parameters that belong to no modality (fusion head, ...): the callback never touches them."""
    assigned = {n for group in groups.values() for n in group.parameter_names}
    return [n for n, p in module.named_parameters() if p.requires_grad and n not in assigned]


def _get_submodule(module: nn.Module, path: str, argument: str) -> nn.Module:
    try:
        return module.get_submodule(path)
    except AttributeError:
        existing = [n for n, _ in module.named_modules() if n]
        close = difflib.get_close_matches(path, existing, n=3)
        top_level = [n for n, _ in module.named_children()]
        hint = f"the module's top-level submodules are {top_level}"
        if close:
            hint = f"did you mean {close}? " + hint
        raise config_error(argument, path, "a dotted path of an existing submodule", hint) from None


def _outermost(modules: list[nn.Module], paths: tuple[str, ...]) -> tuple[tuple[nn.Module, ...], tuple[str, ...]]:
    """Drops paths nested inside another path of the same group, so nothing is scaled twice."""
    keep = [
        i
        for i, path in enumerate(paths)
        if not any(other != path and path.startswith(other + ".") for other in paths) and paths.index(path) == i
    ]
    return tuple(modules[i] for i in keep), tuple(paths[i] for i in keep)


def _check_disjoint(groups: Mapping[str, ModalityGroup], named_parameters: Mapping[str, nn.Parameter]) -> None:
    owner: dict[int, tuple[str, str]] = {}
    for name, group in groups.items():
        for parameter_name in group.parameter_names:
            key = id(named_parameters[parameter_name])
            if key in owner and owner[key][0] != name:
                other, other_parameter = owner[key]
                raise config_error(
                    f"modalities[{name!r}]",
                    parameter_name,
                    "disjoint modality groups (each trainable parameter in at most one modality)",
                    f"'{parameter_name}' is also selected by modalities[{other!r}] (as '{other_parameter}'); "
                    "narrow one of the two paths or regexes.",
                )
            owner[key] = (name, parameter_name)


def _sample(names: set[str], limit: int = 6) -> str:
    ordered = sorted(names)
    shown = ", ".join(ordered[:limit])
    return shown + (f", ... ({len(ordered)} in all)" if len(ordered) > limit else "")
