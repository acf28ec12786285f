"""What a prediction task changes: the targets' form, the loss, and what a prediction is.

Three tasks share the models and data here; ``num_classes`` counts the model's outputs in each:

- ``"multiclass"``: one class per sample; targets int64 ``[B]``, ``num_classes`` >= 2 logits,
  cross-entropy, predictions are softmax probabilities.
- ``"multilabel"``: any number of the ``num_classes`` labels per sample; targets float 0/1
  ``[B, num_classes]``, ``num_classes`` >= 2 logits, binary cross-entropy with logits, predictions are
  sigmoid probabilities.
- ``"regression"``: real targets, float32 ``[B]`` when ``num_classes`` is 1, else
  ``[B, num_classes]``; mean squared error, predictions are the outputs themselves.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import torch.nn.functional as F
from torch import Tensor

from pdmp_lightning.errors import check_int, config_error

Task = Literal["multiclass", "multilabel", "regression"]
TASKS: tuple[str, ...] = get_args(Task)


def check_task(task: Any, num_classes: Any) -> None:
    """Raises a configuration error unless ``task`` is known and ``num_classes`` fits it.

    Args:
        task: ``"multiclass"``, ``"multilabel"`` or ``"regression"``.
        num_classes: Classes, labels or regression outputs: at least 2, 2 or 1.

    Examples:
        >>> check_task("regression", 1)
        >>> from pdmp_lightning.errors import PDMPConfigurationError
        >>> try:
        ...     check_task("multiclass", 1)
        ... except PDMPConfigurationError as error:
        ...     print(str(error).split(" Hint")[0])
        `num_classes`: got 1; expected an integer >= 2 for task='multiclass'.
    """
    if task not in TASKS:
        raise config_error("task", task, f"one of {list(TASKS)}")
    minimum = 1 if task == "regression" else 2
    hint = "only task='regression' has a single output." if minimum == 2 else None
    check_int("num_classes", num_classes, minimum, allowed=f"an integer >= {minimum} for task={task!r}", hint=hint)


def task_outputs(task: str, logits: Tensor) -> Tensor:
    """The model's raw outputs in the targets' shape: ``[B, 1]`` regression outputs become ``[B]``.

    Examples:
        >>> import torch
        >>> logits = torch.zeros(5, 1)
        >>> task_outputs("regression", logits).shape
        torch.Size([5])
        >>> task_outputs("multilabel", logits).shape
        torch.Size([5, 1])
    """
    return logits.squeeze(1) if task == "regression" and logits.dim() == 2 and logits.shape[1] == 1 else logits


def task_loss(task: str, logits: Tensor, targets: Tensor) -> Tensor:
    """The task's training loss: cross-entropy, binary cross-entropy with logits, or mean squared error.

    Args:
        task: ``"multiclass"``, ``"multilabel"`` or ``"regression"``.
        logits: The model's outputs, ``[B, num_classes]``.
        targets: The batch's targets (see the module docstring for their form).

    Examples:
        >>> import torch
        >>> round(task_loss("regression", torch.zeros(4, 1), torch.ones(4)).item(), 3)
        1.0
        >>> round(task_loss("multilabel", torch.zeros(2, 3), torch.ones(2, 3)).item(), 3)
        0.693
    """
    if task == "multilabel":
        return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))
    if task == "regression":
        return F.mse_loss(task_outputs(task, logits), targets.to(logits.dtype))
    return F.cross_entropy(logits, targets)


def task_predictions(task: str, logits: Tensor) -> Tensor:
    """What a prediction is: softmax or sigmoid probabilities, or the regression values.

    Examples:
        >>> import torch
        >>> task_predictions("multilabel", torch.zeros(1, 2)).tolist()
        [[0.5, 0.5]]
        >>> task_predictions("regression", torch.ones(2, 1)).tolist()
        [1.0, 1.0]
    """
    if task == "multiclass":
        return logits.softmax(dim=1)
    if task == "multilabel":
        return logits.sigmoid()
    return task_outputs(task, logits)
