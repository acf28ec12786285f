"""AGM's official training step (Li et al., ICCV 2023), transplanted.

Source: https://github.com/lihong2303/AGM_ICCV2023, commit 5a65542c70b1c7c15c5df291e77fa9cf2bbb9549
(``git log``: "Update README.md"): ``model/CREMAD_net.py`` lines 7-72 (``Modality_Visual``,
``Modality_Audio``, ``Modality_out``, ``GradMod``) and 100-122 (``AVClassifier.forward`` with
``pad_audio`` / ``pad_visual``), and ``run/CREMAD_main.py`` lines 13-244 (``train``), the
multimodal late-fusion branch with ``cfgs.methods == "AGM"``. Changes for the transplant only: the
net is :class:`tests.avclassifier.AVClassifier` (the official shape at a small size; its
``forward`` returns the logits, so ``GradMod``'s ``mode = "feature"`` call and the unused
``encoded_feature`` are dropped); ``spec.unsqueeze(1).float()`` and ``image.float()`` become the
float64 batch tensors; the per-class accuracy bookkeeping, tensorboard and logging are dropped; the
loop runs over given batches with ``iteration = (epoch - 1) * total_batch + step + 1`` kept. Kept as
in the original: the three masked passes in eval mode with the graph kept (``zero_padding_out``
included, unused), the responses through identity modules whose full backward hooks scale their
gradient, the training loss ``CE(m_a + m_v)``, the scores with the 1e-8 floor, the running means of
the scores from 0 updated after the coefficients, the ``min(.., 10)``, and the clip of the whole
gradient norm to 1 when an element of ``fc_out.weight.grad`` leaves [-1, 1].
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from tests.avclassifier import AVClassifier


class Modality_Visual(nn.Module):
    def forward(self, total_out, pad_visual_out, pad_audio_out):  # type: ignore[no-untyped-def]
        return 0.5 * (total_out - pad_visual_out + pad_audio_out)


class Modality_Audio(nn.Module):
    def forward(self, total_out, pad_visual_out, pad_audio_out):  # type: ignore[no-untyped-def]
        return 0.5 * (total_out - pad_audio_out + pad_visual_out)


class Modality_out(nn.Module):
    def forward(self, x):  # type: ignore[no-untyped-def]
        return x


class GradMod(nn.Module):
    def __init__(self, net: AVClassifier) -> None:
        super().__init__()
        self.mode = "train"
        self.net = net
        self.m_v = Modality_Visual()
        self.m_a = Modality_Audio()
        self.m_v_o = Modality_out()
        self.m_a_o = Modality_out()

        self.scale_a = 1.0
        self.scale_v = 1.0

        self.m_a_o.register_full_backward_hook(self.hooka)
        self.m_v_o.register_full_backward_hook(self.hookv)

    def hooka(self, m, ginp, gout):  # type: ignore[no-untyped-def]
        gnew = ginp[0].clone()
        return (gnew * self.scale_a,)

    def hookv(self, m, ginp, gout):  # type: ignore[no-untyped-def]
        gnew = ginp[0].clone()
        return (gnew * self.scale_v,)

    def update_scale(self, coeff_a: float, coeff_v: float) -> None:
        self.scale_a = coeff_a
        self.scale_v = coeff_v

    def forward(self, audio, visual):  # type: ignore[no-untyped-def]
        total_out = self.net(audio, visual, pad_audio=False, pad_visual=False)
        self.net.eval()
        pad_visual_out = self.net(audio, visual, pad_audio=False, pad_visual=True)
        pad_audio_out = self.net(audio, visual, pad_audio=True, pad_visual=False)
        zero_padding_out = self.net(audio, visual, pad_audio=True, pad_visual=True)
        if self.mode == "train":
            self.net.train()
        m_a = self.m_a_o(self.m_a(total_out, pad_visual_out, pad_audio_out))
        m_v = self.m_v_o(self.m_v(total_out, pad_visual_out, pad_audio_out))
        return total_out, pad_visual_out, pad_audio_out, zero_padding_out, m_a + m_v


def train_steps(
    net: AVClassifier,
    batches: Iterable[Mapping[str, Tensor]],
    optimizer: torch.optim.Optimizer,
    alpha: float,
    epoch: int = 1,
    last_score_a: float = 0.0,
    last_score_v: float = 0.0,
    modulation_starts: int = 0,
    modulation_ends: int = 100,
) -> tuple[list[tuple[float, float]], tuple[float, float]]:
    """Runs the official step on each batch; returns each step's (coeff_a, coeff_v) and the running means."""
    batches = list(batches)
    model = GradMod(net)
    criterion = nn.CrossEntropyLoss()
    softmax = nn.Softmax(dim=1)
    model.train()
    total_batch = len(batches)
    model.mode = "train"
    train_score_a = last_score_a
    train_score_v = last_score_v
    coefficients = []
    for step, batch in enumerate(batches):
        spec, image, label = batch["audio"], batch["visual"], batch["label"]
        iteration = (epoch - 1) * total_batch + step + 1

        total_out, pad_visual_out, pad_audio_out, zero_padding_out, out = model(spec, image)
        out_a = 0.5 * (total_out - pad_audio_out + pad_visual_out)
        out_v = 0.5 * (total_out - pad_visual_out + pad_audio_out)
        loss = criterion(out, label)

        optimizer.zero_grad()

        if torch.isnan(out_a).any() or torch.isnan(out_v).any():
            raise ValueError

        score_audio = 0.0
        score_visual = 0.0
        for k in range(out_a.size(0)):
            if torch.isinf(torch.log(softmax(out_a)[k][label[k]])) or softmax(out_a)[k][label[k]] < 1e-8:
                score_audio += -torch.log(torch.tensor(1e-8, dtype=out_a.dtype, device=out_a.device))
            else:
                score_audio += -torch.log(softmax(out_a)[k][label[k]])

            if torch.isinf(torch.log(softmax(out_v)[k][label[k]])) or softmax(out_v)[k][label[k]] < 1e-8:
                score_visual += -torch.log(torch.tensor(1e-8, dtype=out_v.dtype, device=out_v.device))
            else:
                score_visual += -torch.log(softmax(out_v)[k][label[k]])
        score_audio = score_audio / out_a.size(0)
        score_visual = score_visual / out_v.size(0)

        ratio_a = math.exp(score_visual.item() - score_audio.item())
        ratio_v = math.exp(score_audio.item() - score_visual.item())

        optimal_ratio_a = math.exp(train_score_v - train_score_a)
        optimal_ratio_v = math.exp(train_score_a - train_score_v)

        coeff_a = math.exp(alpha * (min(optimal_ratio_a - ratio_a, 10)))
        coeff_v = math.exp(alpha * (min(optimal_ratio_v - ratio_v, 10)))

        train_score_a = train_score_a * (iteration - 1) / iteration + score_audio.item() / iteration
        train_score_v = train_score_v * (iteration - 1) / iteration + score_visual.item() / iteration

        if modulation_starts <= epoch <= modulation_ends:
            model.update_scale(coeff_a, coeff_v)
            loss.backward()
        else:
            loss.backward()
        coefficients.append((coeff_a, coeff_v))

        grad_max = torch.max(model.net.fusion_module.fc_out.weight.grad)
        grad_min = torch.min(model.net.fusion_module.fc_out.weight.grad)
        if grad_max > 1 or grad_min < -1:
            nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        optimizer.step()
    return coefficients, (train_score_a, train_score_v)
