"""OPM's official training step (Wei et al., TPAMI 2024, "on-the-fly prediction modulation"), transplanted.

Source: https://github.com/GeWu-Lab/BML_TPAMI2024, commit 4b3aa4fd841856c4acbebf48549e6c59fbf7635e:
``code/models/Classifier.py`` lines 8-21 (``custom_autograd``), 24-55 (``Modality_drop.execute_drop``),
58-72 (``calcu_q``) and 94-150 (``Classifier.forward``), with the concat fusion of
``code/models/fusion_model.py`` lines 16-25, and the loop of ``code/main.py`` lines 77-113 with
``use_adam_drop`` on and ``use_modulation`` off (OPM alone). Changes for the transplant only: the
encoders and the fusion layer ``fxy`` are a :class:`~pdmp_lightning.models.MultimodalClassifier`'s
(``encoders['audio']``, ``encoders['visual']``, ``fusion.head``), already pooled to ``[B, d]``;
batches are dicts; loss bookkeeping and tqdm are dropped; and the two random draws are passed in
(``execute_draw`` for ``np.random.rand(1)``, ``keep_draw`` for
``torch.distributions.Bernoulli(1 - q).sample([B, 1])``), so that a test can give both sides the same
numbers. Kept as in the original: the scores from the detached split head with half the bias each,
``calcu_q``, the execute test ``rand >= 1 - p_exe``, the dimension-weighted ``theta``, the rescaling
by ``1 / (1 - theta)`` in forward and backward, the removal of samples left with no modality, and
the warm-up ``epoch <= 5``. One numeric change: ``calcu_q``'s vector is float64 (the original's
float32 vector rounds q to about 1e-7, which a float64 comparison would see).

A property of the original worth knowing: ``q`` is computed from the encoders' live outputs, so it
carries their graph, and ``custom_autograd.backward`` returns ``theta`` itself as the gradient of
``theta``: every executed step sends an extra gradient through ``theta -> q -> the scores -> the
encoders``, unrelated to the loss. ``detach_q=True`` (not official) cuts that path; the library's
callback computes the scores without a graph, as the paper describes the method.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
from torch import Tensor, nn

from pdmp_lightning.models import MultimodalClassifier


class custom_autograd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, theta):  # type: ignore[no-untyped-def]
        ctx.save_for_backward(input, theta)
        return input / (1 - theta.item())

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[no-untyped-def]
        input, theta = ctx.saved_tensors
        input_grad = 1 / (1 - theta.item()) * grad_output.clone()
        return input_grad, theta


def calcu_q(performance_1: Tensor, performance_2: Tensor, q_base: float, fix_lambda: float) -> Tensor:
    q = torch.tensor([0.0, 0.0], dtype=torch.float64)
    relu = nn.ReLU(inplace=True)
    ratio_1 = torch.tanh(relu(performance_1 / performance_2 - 1))
    ratio_2 = torch.tanh(relu(performance_2 / performance_1 - 1))
    lamda = fix_lambda
    q[0] = q_base * (1 + lamda * ratio_1) if ratio_1 > 0 else 0
    q[1] = q_base * (1 + lamda * ratio_2) if ratio_2 > 0 else 0
    q = torch.clip(q, 0.0, 1.0)
    return q


def execute_drop(
    fead_list: list[Tensor],
    q: Tensor,
    dim_list: Tensor,
    p_exe: float,
    execute_draw: Callable[[], float],
    keep_draw: Callable[[Tensor, int], Tensor],
) -> tuple[list[Tensor], Tensor]:
    B = fead_list[0].shape[0]
    D = fead_list[0].shape[1]
    exe_drop = torch.tensor(execute_draw()) >= 1 - p_exe
    if not exe_drop:
        return fead_list, torch.ones([B], dtype=torch.int32)

    num_mod = len(fead_list)
    d_sum = sum(dim_list)
    q_sum = sum(dim_list * q)
    theta = q_sum / d_sum

    mask = keep_draw(q, B).permute(2, 1, 0).contiguous().reshape(num_mod, B, -1)  # [2,B,1]
    concat_list = torch.stack(fead_list, dim=0)  # [2,B,D]
    concat_list = torch.mul(concat_list, mask)
    concat_list = custom_autograd.apply(concat_list, theta)
    mask = torch.transpose(mask, 0, 1).squeeze(-1)  # [B,2]
    update_flag = torch.sum(mask, dim=1) > 0
    cleaned_fea = torch.masked_select(concat_list, update_flag.unsqueeze(-1)).reshape(num_mod, -1, D)
    cleaned_fea = torch.chunk(cleaned_fea, num_mod, dim=0)
    cleaned_fea = [_.squeeze(0) for _ in cleaned_fea]  # [B,D]
    return cleaned_fea, update_flag


def train_steps(
    model: nn.Module,
    batches: Iterable[Mapping[str, Tensor]],
    optimizer: torch.optim.Optimizer,
    epoch: int,
    execute_draw: Callable[[], float],
    keep_draw: Callable[[Tensor, int], Tensor],
    q_base: float = 0.5,
    lam: float = 0.5,
    p_exe: float = 0.7,
    detach_q: bool = False,
    features: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None,
    fxy: nn.Linear | None = None,
) -> list[Tensor]:
    """Runs the official OPM step on each batch of one epoch; returns each step's q (None in warm-up).

    ``features`` (the pooled ``out_1, out_2``) and ``fxy`` run it on the official ``AVClassifier`` shape.
    """
    loss_fn = nn.CrossEntropyLoss()
    softmax = nn.Softmax(dim=1)
    if features is None:
        assert isinstance(model, MultimodalClassifier)
        encoders = model.encoders
        features = lambda x, y: (encoders["audio"](x), encoders["visual"](y))  # noqa: E731
        fxy = model.fusion.head
    assert fxy is not None
    model.train()
    qs = []
    for batch in batches:
        mod_1, mod_2, label = batch["audio"], batch["visual"], batch["label"]
        optimizer.zero_grad()
        warm_up = 1 if epoch <= 5 else 0

        out_1, out_2 = features(mod_1, mod_2)
        dims = torch.tensor([out_1.shape[1], out_2.shape[1]])
        w = fxy.weight.clone().detach()
        b = fxy.bias.clone().detach()
        t1_bias = b / 2
        t2_bias = b / 2
        d_1 = out_1.shape[1]
        t1 = torch.mm(out_1, torch.transpose(w[:, :d_1], 0, 1)) + t1_bias
        t2 = torch.mm(out_2, torch.transpose(w[:, d_1:], 0, 1)) + t2_bias
        performance_1 = sum([softmax(t1)[i][int(label[i].item())] for i in range(t1.shape[0])])
        performance_2 = sum([softmax(t2)[i][int(label[i].item())] for i in range(t2.shape[0])])

        if warm_up == 0:
            q = calcu_q(performance_1, performance_2, q_base, fix_lambda=lam)
            if detach_q:  # not official: no gradient through theta
                q = q.detach()
            qs.append(q)
            cleaned_fea, update_flag = execute_drop([out_1, out_2], q, dims, p_exe, execute_draw, keep_draw)
            out = fxy(torch.cat([cleaned_fea[0], cleaned_fea[1]], dim=1))
            if torch.sum(update_flag, dim=0) == 0:
                continue
            select_mask = update_flag != 0
            label = label[select_mask]
        else:
            out = fxy(torch.cat([out_1, out_2], dim=1))

        loss = loss_fn(out, label)
        loss.backward()
        optimizer.step()
    return qs
