"""Reading one modality's input, or the labels, out of a training batch.

Batches are dicts (looked up by key) or tuples/lists (looked up by index), as Lightning projects
commonly write them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from pdmp_lightning.errors import config_error

BatchKey = str | int


def check_batch_key(argument: str, key: object) -> BatchKey:
    """Returns ``key`` if it can address a batch (a dict key or a tuple index), else raises naming ``argument``."""
    if isinstance(key, bool) or not isinstance(key, str | int):
        raise config_error(argument, key, "a batch key (str) or a tuple index (int)")
    return key


def select_from_batch(batch: Any, key: BatchKey, argument: str) -> Tensor:
    """Returns ``batch[key]`` as a tensor, or raises an error that names ``argument``.

    Args:
        batch: A dict, tuple or list batch.
        key: A dict key or a sequence index.
        argument: The callback argument the key came from (``"inputs['audio']"``, ``"target"``).

    Raises:
        PDMPConfigurationError: The key is missing, the batch kind does not fit the key, or the
            value is not a tensor.
    """
    if isinstance(batch, Mapping):
        if key not in batch:
            raise config_error(argument, key, f"one of the batch's keys {list(batch)}", _HINT)
        value = batch[key]
    elif isinstance(batch, Sequence) and not isinstance(batch, str):
        if not isinstance(key, int) or not -len(batch) <= key < len(batch):
            raise config_error(argument, key, f"an integer index into the tuple batch of length {len(batch)}", _HINT)
        value = batch[key]
    else:
        raise config_error(argument, key, "a dict, tuple or list batch", f"the batch is a {type(batch).__name__}.")
    if not isinstance(value, Tensor):
        raise config_error(
            argument, key, "a key whose batch value is a tensor", f"batch[{key!r}] is a {type(value).__name__}."
        )
    return value


_HINT = "set the callback's `inputs` (modality -> batch key or index) and `target` to match your batches."
