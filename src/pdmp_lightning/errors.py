"""The error type the library raises for bad configuration, a helper that formats it, and its warnings."""

from __future__ import annotations

import math
from typing import Any


class PDMPConfigurationError(ValueError):
    """A callback argument, a module or a batch does not fit what the callback needs.

    The message always names the argument, the value that was given, what is allowed and, where one
    helps, a hint. It is raised before the callback registers a hook or writes a file.

    Examples:
        >>> from pdmp_lightning import PDMPCallback
        >>> try:
        ...     PDMPCallback({"audio": "audio_enc", "visual": "visual_enc"}, gamma_p=-1.0)
        ... except PDMPConfigurationError as error:
        ...     print(str(error).split(". Hint")[0])
        `gamma_p`: got -1.0; expected a finite number > 0
    """


class ProbeRankingWarning(UserWarning):
    """The probes' ranking may not be the one full unimodal training would give.

    Issued by ``PDMPCallback`` when the best probe is barely above chance, or
    when the best two probes are within one standard error of each other on the validation data.
    The probe report lists the same doubts under ``"doubts"``. Turn it into an error to stop such a
    run before it trains, or silence it once you have checked the ranking.

    Examples:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     # fail fast instead of training on a guess
        ...     warnings.simplefilter("error", ProbeRankingWarning)
        ...     try:
        ...         warnings.warn("the probes are tied", ProbeRankingWarning)
        ...     except ProbeRankingWarning as warning:
        ...         print(f"stopped: {warning}")
        stopped: the probes are tied
    """


def config_error(argument: str, value: Any, allowed: str, hint: str | None = None) -> PDMPConfigurationError:
    """Builds a ``PDMPConfigurationError`` with the library's message layout.

    Args:
        argument: The argument (or batch key, or module path) at fault.
        value: What was given.
        allowed: What would have been accepted.
        hint: How to fix it, if there is something more to say than ``allowed``.

    Returns:
        The error, ready to raise.
    """
    message = f"`{argument}`: got {value!r}; expected {allowed}."
    if hint:
        message += f" Hint: {hint}"
    return PDMPConfigurationError(message)


def is_number(
    value: Any,
    *,
    above: float | None = None,
    at_least: float | None = None,
    at_most: float | None = None,
    below: float | None = None,
) -> bool:
    """Whether ``value`` is a finite int or float (not a bool) within the given bounds.

    The float arguments' checks share it; each site keeps its own message, naming the argument and
    what it allows.

    Args:
        value: What was given.
        above: Exclusive lower bound.
        at_least: Inclusive lower bound.
        at_most: Inclusive upper bound.
        below: Exclusive upper bound.

    Examples:
        >>> is_number(0.5, above=0, at_most=1), is_number(0, above=0)
        (True, False)
        >>> is_number(True), is_number(float("nan"))
        (False, False)
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return False
    return (
        (above is None or value > above)
        and (at_least is None or value >= at_least)
        and (at_most is None or value <= at_most)
        and (below is None or value < below)
    )


def check_int(
    argument: str,
    value: Any,
    minimum: int | None = None,
    *,
    optional: bool = False,
    allowed: str | None = None,
    hint: str | None = None,
) -> None:
    """Raises a ``PDMPConfigurationError`` unless ``value`` is an integer (not a bool) >= ``minimum``.

    Args:
        argument: The argument checked.
        value: What was given.
        minimum: The smallest value allowed, or None for any integer.
        optional: Whether None is allowed too.
        allowed: What the message says is allowed (default: "an integer >= minimum", with "None or " when optional).
        hint: How to fix it.

    Examples:
        >>> check_int("batch_size", 64, 1)
        >>> check_int("batch_size", 0, 1)
        Traceback (most recent call last):
        ...
        pdmp_lightning.errors.PDMPConfigurationError: `batch_size`: got 0; expected an integer >= 1.
    """
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        if allowed is None:
            allowed = "an integer" if minimum is None else f"an integer >= {minimum}"
            allowed = f"None or {allowed}" if optional else allowed
        raise config_error(argument, value, allowed, hint)
