r"""The training losses. Distillation: :math:`1 - \cos(f_s, f_t)`, batch mean (texts and images),
plus, if asked, :math:`\mu\,\tau^2 \mathrm{KL}(p_t^\tau \| p_s^\tau)` on the zero-shot logits.
Dual-loss fine-tuning: :math:`\mathrm{CE}_\epsilon(z_s, y) + \lambda\, \tau^2
\mathrm{KL}(p_t^\tau \,\|\, p_s^\tau)` (:math:`p^\tau = \mathrm{softmax}(z/\tau)`,
:math:`\epsilon` the label smoothing)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .recipe import Recipe


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            temperature: float) -> torch.Tensor:
    r"""Hinton's distillation term :math:`\tau^2\, \mathrm{KL}(\mathrm{softmax}(z_t/\tau)
    \,\|\, \mathrm{softmax}(z_s/\tau))`, batch mean (:math:`\tau^2` keeps its gradients'
    scale independent of :math:`\tau`)."""
    p_t = F.softmax(teacher_logits / temperature, dim=-1)
    kl = F.kl_div(F.log_softmax(student_logits / temperature, dim=-1), p_t, reduction="batchmean")
    return temperature ** 2 * kl


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    r""":math:`\mathrm{mean}_i (1 - s_i \cdot t_i)` over rows of L2-normalised features: the
    batch mean of :math:`1 - \cos(f_s, f_t)`."""
    return (1 - (student * teacher).sum(-1)).mean()


def finetune_loss(z_s: torch.Tensor, z_t: torch.Tensor, labels: torch.Tensor,
                  recipe: Recipe) -> torch.Tensor:
    """Cross-entropy (label-smoothed if asked) + lambda KL against the teacher's logits."""
    ce = F.cross_entropy(z_s, labels, label_smoothing=recipe.label_smoothing)
    return ce + recipe.kl_weight * kd_loss(z_s, z_t, recipe.kd_temperature)
