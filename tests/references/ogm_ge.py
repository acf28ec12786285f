"""OGM-GE's official training step (Peng et al., CVPR 2022), transplanted.

Source: https://github.com/GeWu-Lab/OGM-GE_CVPR2022, commit 343dc1d95c9bda88f105c0da8d24f185e0e98b54,
``main.py`` lines 57-155 (``train_epoch``), concat fusion (``fusion_method != 'sum'``). Changes for the
transplant only: the model is a :class:`~pdmp_lightning.models.MultimodalClassifier` with encoders
``audio`` and ``visual`` and a concat head (the official ``AVClassifier`` calls them ``audio_net``,
``visual_net`` and ``fusion_module.fc_out``; ``model.module`` becomes ``model``); batches are dicts;
``spec.unsqueeze(1)`` and the tensorboard logging are dropped. Kept as in the original: scores from
the split head with half the bias each, ``relu`` inside ``tanh``, the ``<=`` on both ends of the
modulation window, and the selection of the gradients to modulate: every parameter whose second
name component contains ``audio`` (``visual``) and whose gradient is 4-D, i.e. the encoders'
convolution weights. The GE noise is drawn with ``torch.zeros_like(grad).normal_(0, std + 1e-8)``
from the global generator, as in the original.

``features`` and ``fc_out`` let the same loop run on the official ``AVClassifier`` shape
(:mod:`tests.avclassifier`, whose ``features`` returns the pooled ``a, v`` as the official forward
does).

``update_rates`` is not official: it applies the official coefficient as a learning-rate multiplier
of the modulated tensors (the library's ``mechanism="update"``) instead of scaling their gradient,
to check that each step uses its own coefficient.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
from torch import Tensor, nn

from pdmp_lightning.models import MultimodalClassifier


def train_steps(
    model: nn.Module,
    batches: Iterable[Mapping[str, Tensor]],
    optimizer: torch.optim.Optimizer,
    alpha: float,
    modulation: str = "OGM_GE",
    epoch: int = 0,
    modulation_starts: int = 0,
    modulation_ends: int = 50,
    update_rates: bool = False,
    features: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None,
    fc_out: nn.Linear | None = None,
) -> list[tuple[float, float]]:
    """Runs the official step on each batch; returns each step's (coeff_a, coeff_v)."""
    criterion = nn.CrossEntropyLoss()
    softmax = nn.Softmax(dim=1)
    relu = nn.ReLU(inplace=True)
    tanh = nn.Tanh()
    if features is None:
        assert isinstance(model, MultimodalClassifier)
        encoders = model.encoders
        features = lambda spec, image: (encoders["audio"](spec), encoders["visual"](image))  # noqa: E731
        fc_out = model.fusion.head
    assert fc_out is not None
    coefficients = []

    model.train()
    for batch in batches:
        image, spec, label = batch["visual"], batch["audio"], batch["label"]
        optimizer.zero_grad()

        a, v = features(spec, image)
        out = fc_out(torch.cat((a, v), dim=1))

        weight_size = fc_out.weight.size(1)
        out_v = torch.mm(v, torch.transpose(fc_out.weight[:, weight_size // 2 :], 0, 1)) + fc_out.bias / 2
        out_a = torch.mm(a, torch.transpose(fc_out.weight[:, : weight_size // 2], 0, 1)) + fc_out.bias / 2

        loss = criterion(out, label)
        loss.backward()

        score_v = sum([softmax(out_v)[i][label[i]] for i in range(out_v.size(0))])
        score_a = sum([softmax(out_a)[i][label[i]] for i in range(out_a.size(0))])

        ratio_v = score_v / score_a
        ratio_a = 1 / ratio_v

        if ratio_v > 1:
            coeff_v = 1 - tanh(alpha * relu(ratio_v))
            coeff_a = 1
        else:
            coeff_a = 1 - tanh(alpha * relu(ratio_a))
            coeff_v = 1
        coefficients.append((_number(coeff_a), _number(coeff_v)))

        # Not official: with update_rates the gradients keep their scale and the step is scaled instead.
        grad_coeff_a, grad_coeff_v = (1, 1) if update_rates else (coeff_a, coeff_v)
        rates: dict[int, float] = {}

        if modulation_starts <= epoch <= modulation_ends:  # bug fixed
            for name, parms in model.named_parameters():
                layer = str(name).split(".")[1]

                if "audio" in layer and len(parms.grad.size()) == 4:
                    rates[id(parms)] = _number(coeff_a)
                    if modulation == "OGM_GE":  # bug fixed
                        parms.grad = parms.grad * grad_coeff_a + torch.zeros_like(parms.grad).normal_(
                            0, parms.grad.std().item() + 1e-8
                        )
                    elif modulation == "OGM":
                        parms.grad *= grad_coeff_a

                if "visual" in layer and len(parms.grad.size()) == 4:
                    rates[id(parms)] = _number(coeff_v)
                    if modulation == "OGM_GE":  # bug fixed
                        parms.grad = parms.grad * grad_coeff_v + torch.zeros_like(parms.grad).normal_(
                            0, parms.grad.std().item() + 1e-8
                        )
                    elif modulation == "OGM":
                        parms.grad *= grad_coeff_v

        if update_rates and rates:
            _step_with_rates(optimizer, rates)
        else:
            optimizer.step()
    return coefficients


def _number(value: Tensor | float) -> float:
    return float(value.detach()) if isinstance(value, Tensor) else float(value)


def _step_with_rates(optimizer: torch.optim.Optimizer, rates: dict[int, float]) -> None:
    """One step in which each listed tensor's learning rate is multiplied by its coefficient."""
    original = optimizer.param_groups
    split = []
    for group in original:
        for parameter in group["params"]:
            split.append({**group, "params": [parameter], "lr": group["lr"] * rates.get(id(parameter), 1.0)})
    optimizer.param_groups = split
    try:
        optimizer.step()
    finally:
        optimizer.param_groups = original
