"""MMPareto's official training step (Wei and Hu, ICML 2024), transplanted.

Source: https://github.com/GeWu-Lab/MMPareto_ICML2024, commit a339db39cc25b157df376b50bb894917dc6c01d6:
``code/MMPareto.py`` lines 57-212 (``train_epoch``) and ``code/min_norm_solvers.py`` lines 9-58 and
92-128 (``_min_norm_element_from2``, ``_min_norm_2d``, and ``find_min_norm_element`` up to its
two-task return; with two tasks it returns there). Changes for the transplant only: the official
``AVClassifier`` (``audio_net``, ``visual_net``, ``head``, ``head_audio``, ``head_video``) is
:class:`OfficialNames`, which gives those names to the modules of a
:class:`~pdmp_lightning.models.MultimodalClassifier` built with unimodal heads; batches are dicts;
loss bookkeeping, tqdm and ``.to(device)`` are dropped. Kept as in the original: three backward
passes with ``retain_graph`` and ``zero_grad`` between them, the parameter selection by name
(``'head'`` excluded, ``'audio'`` / ``'visual'`` in the name; in the last loop by the components of
``re.split('[_.]', name)``), the cosine test, the solver and its 0.999 / 0.001 boundary cases, the
magnitude rule with gamma 1.5, and a fresh backward of the summed loss for the heads' gradients.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pdmp_lightning.models import MultimodalClassifier


class OfficialNames(nn.Module):
    """The official AVClassifier's names over a MultimodalClassifier's modules (shared, not copied)."""

    def __init__(self, model: MultimodalClassifier) -> None:
        super().__init__()
        assert model.unimodal_heads is not None
        self.audio_net = model.encoders["audio"]
        self.visual_net = model.encoders["visual"]
        self.head = model.fusion.head
        self.head_audio = model.unimodal_heads["audio"]
        self.head_video = model.unimodal_heads["visual"]

    def forward(self, audio: Tensor, visual: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        a = self.audio_net(audio)
        v = self.visual_net(visual)
        out = torch.cat((a, v), 1)
        return self.head(out), self.head_audio(a), self.head_video(v)


class MinNormSolver:
    @staticmethod
    def _min_norm_element_from2(v1v1, v1v2, v2v2):  # type: ignore[no-untyped-def]
        if v1v2 >= v1v1:
            gamma = 0.999
            cost = v1v1
            return gamma, cost
        if v1v2 >= v2v2:
            gamma = 0.001
            cost = v2v2
            return gamma, cost
        gamma = -1.0 * ((v1v2 - v2v2) / (v1v1 + v2v2 - 2 * v1v2))
        cost = v2v2 + gamma * (v1v2 - v2v2)
        return gamma, cost

    @staticmethod
    def _min_norm_2d(vecs, dps):  # type: ignore[no-untyped-def]
        dmin = 1e8
        for i in range(len(vecs)):
            for j in range(i + 1, len(vecs)):
                if (i, j) not in dps:
                    dps[(i, j)] = 0.0
                    for k in range(len(vecs[i])):
                        dps[(i, j)] += torch.mul(vecs[i][k], vecs[j][k]).sum().data.cpu()
                    dps[(j, i)] = dps[(i, j)]
                if (i, i) not in dps:
                    dps[(i, i)] = 0.0
                    for k in range(len(vecs[i])):
                        dps[(i, i)] += torch.mul(vecs[i][k], vecs[i][k]).sum().data.cpu()
                if (j, j) not in dps:
                    dps[(j, j)] = 0.0
                    for k in range(len(vecs[i])):
                        dps[(j, j)] += torch.mul(vecs[j][k], vecs[j][k]).sum().data.cpu()
                c, d = MinNormSolver._min_norm_element_from2(dps[(i, i)], dps[(i, j)], dps[(j, j)])
                if d < dmin:
                    dmin = d
                    sol = [(i, j), c, d]
        return sol, dps

    @staticmethod
    def find_min_norm_element(vecs):  # type: ignore[no-untyped-def]
        dps = {}
        init_sol, dps = MinNormSolver._min_norm_2d(vecs, dps)
        new_dps = {}
        new_init_sol = []
        for item in dps:
            new_dps[item] = dps[item].numpy()
        for item in init_sol:
            if torch.is_tensor(item):
                data = item.numpy()
            else:
                data = item
            new_init_sol.append(data)
        dps = new_dps
        init_sol = new_init_sol
        n = len(vecs)
        sol_vec = np.zeros(n)
        sol_vec[init_sol[0][0]] = init_sol[1]
        sol_vec[init_sol[0][1]] = 1 - init_sol[1]
        assert n < 3, "the transplant keeps the two-task case only"
        return sol_vec, init_sol[2]


def train_steps(
    classifier: MultimodalClassifier, batches: Iterable[Mapping[str, Tensor]], optimizer: torch.optim.Optimizer
) -> list[tuple[float, float]]:
    """Runs the official step on each batch; returns each step's (cos_audio, cos_visual)."""
    model = OfficialNames(classifier)
    criterion = nn.CrossEntropyLoss()
    model.train()
    cosines = []

    record_names_audio = []
    record_names_visual = []
    for name, param in model.named_parameters():
        if "head" in name:
            continue
        if "audio" in name:
            record_names_audio.append((name, param))
            continue
        if "visual" in name:
            record_names_visual.append((name, param))
            continue

    for batch in batches:
        spec, images, label = batch["audio"], batch["visual"], batch["label"]
        optimizer.zero_grad()
        out, out_a, out_v = model(spec, images)

        loss_mm = criterion(out, label)
        loss_a = criterion(out_a, label)
        loss_v = criterion(out_v, label)

        losses = [loss_mm, loss_a, loss_v]
        all_loss = ["both", "audio", "visual"]

        grads_audio: dict = {}
        grads_visual: dict = {}

        for idx, loss_type in enumerate(all_loss):
            loss = losses[idx]
            loss.backward(retain_graph=True)

            if loss_type == "visual":
                for tensor_name, param in record_names_visual:
                    if loss_type not in grads_visual.keys():
                        grads_visual[loss_type] = {}
                    grads_visual[loss_type][tensor_name] = param.grad.data.clone()
                grads_visual[loss_type]["concat"] = torch.cat(
                    [grads_visual[loss_type][tensor_name].flatten() for tensor_name, _ in record_names_visual]
                )
            elif loss_type == "audio":
                for tensor_name, param in record_names_audio:
                    if loss_type not in grads_audio.keys():
                        grads_audio[loss_type] = {}
                    grads_audio[loss_type][tensor_name] = param.grad.data.clone()
                grads_audio[loss_type]["concat"] = torch.cat(
                    [grads_audio[loss_type][tensor_name].flatten() for tensor_name, _ in record_names_audio]
                )
            else:
                for tensor_name, param in record_names_audio:
                    if loss_type not in grads_audio.keys():
                        grads_audio[loss_type] = {}
                    grads_audio[loss_type][tensor_name] = param.grad.data.clone()
                grads_audio[loss_type]["concat"] = torch.cat(
                    [grads_audio[loss_type][tensor_name].flatten() for tensor_name, _ in record_names_audio]
                )
                for tensor_name, param in record_names_visual:
                    if loss_type not in grads_visual.keys():
                        grads_visual[loss_type] = {}
                    grads_visual[loss_type][tensor_name] = param.grad.data.clone()
                grads_visual[loss_type]["concat"] = torch.cat(
                    [grads_visual[loss_type][tensor_name].flatten() for tensor_name, _ in record_names_visual]
                )

            optimizer.zero_grad()

        this_cos_audio = F.cosine_similarity(grads_audio["both"]["concat"], grads_audio["audio"]["concat"], dim=0)
        this_cos_visual = F.cosine_similarity(grads_visual["both"]["concat"], grads_visual["visual"]["concat"], dim=0)
        cosines.append((float(this_cos_audio), float(this_cos_visual)))

        audio_task = ["both", "audio"]
        visual_task = ["both", "visual"]

        audio_k = [0, 0]
        visual_k = [0, 0]

        if this_cos_audio > 0:
            audio_k[0] = 0.5
            audio_k[1] = 0.5
        else:
            audio_k, min_norm = MinNormSolver.find_min_norm_element([list(grads_audio[t].values()) for t in audio_task])
        if this_cos_visual > 0:
            visual_k[0] = 0.5
            visual_k[1] = 0.5
        else:
            visual_k, min_norm = MinNormSolver.find_min_norm_element(
                [list(grads_visual[t].values()) for t in visual_task]
            )

        gamma = 1.5

        loss = loss_mm + loss_a + loss_v
        loss.backward()

        for name, param in model.named_parameters():
            if param.grad is not None:
                layer = re.split("[_.]", str(name))
                if "head" in layer:
                    continue
                if "audio" in layer:
                    three_norm = torch.norm(param.grad.data.clone())
                    new_grad = 2 * audio_k[0] * grads_audio["both"][name] + 2 * audio_k[1] * grads_audio["audio"][name]
                    new_norm = torch.norm(new_grad)
                    diff = three_norm / new_norm
                    if diff > 1:
                        param.grad = diff * new_grad * gamma
                    else:
                        param.grad = new_grad * gamma

                if "visual" in layer:
                    three_norm = torch.norm(param.grad.data.clone())
                    new_grad = (
                        2 * visual_k[0] * grads_visual["both"][name] + 2 * visual_k[1] * grads_visual["visual"][name]
                    )
                    new_norm = torch.norm(new_grad)
                    diff = three_norm / new_norm
                    if diff > 1:
                        param.grad = diff * new_grad * gamma
                    else:
                        param.grad = new_grad * gamma

        optimizer.step()
    return cosines
