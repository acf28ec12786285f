"""The one error type the library raises for bad configuration, and a helper that formats it."""

from __future__ import annotations

from typing import Any


class PDMPConfigurationError(ValueError):
    """A callback argument, a module or a batch does not fit what the callback needs.

    The message always names the argument, the value that was given, what is allowed and, where one
    helps, a hint. It is raised before the callback registers a hook or writes a file.

    Example:
        >>> from pdmp_lightning import PDMPCallback
        >>> try:
        ...     PDMPCallback({"audio": "audio_encoder", "visual": "visual_encoder"}, gamma_p=-1.0)
        ... except PDMPConfigurationError as error:
        ...     print(str(error).split(". Hint")[0])
        `gamma_p`: got -1.0; expected a finite number > 0
    """


def config_error(argument: str, value: Any, allowed: str, hint: str | None = None) -> PDMPConfigurationError:
    """Builds a :class:`PDMPConfigurationError` with the library's message layout.

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
