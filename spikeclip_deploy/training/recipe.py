"""Training hyperparameters as data (no torch import, so the CLI can read its defaults)."""
from __future__ import annotations

from dataclasses import dataclass

AUGMENTATIONS = ("flip", "crop-flip")


@dataclass(frozen=True)
class Recipe:
    """Training hyperparameters; the defaults are the SpikeCLIP paper's reference ones
    where it gives them."""

    text_epochs: int = 30
    distill_epochs: int = 50
    finetune_epochs: int = 1
    qat_epochs: int = 0
    batch_size: int = 196  # image distillation and fine-tuning
    text_batch_size: int = 1024
    distill_lr: tuple[float, float] = (5e-3, 5e-4)
    finetune_lr: tuple[float, float] = (5e-4, 1e-5)
    qat_lr: tuple[float, float] = (1e-4, 1e-5)
    kl_weight: float = 1.0
    kd_temperature: float = 1.0  # temperature of every KL term (teacher and student logits / T)
    logit_distill_weight: float = 0.0  # KL on zero-shot logits during image distillation too
    label_smoothing: float = 0.0  # of the fine-tuning cross-entropy
    augment: str = "flip"  # "flip", or "crop-flip": also pad-4 random crops, teacher run on the view
    text_datasets: tuple[str, ...] = ("cifar10", "cifar100")
    hardware: str = "loihi2"  # whose fixed-point grid quantization-aware training uses
    seed: int = 0
    bf16: bool = False  # bf16 autocast of the image forward pass, where the device supports it
    channels_last: bool = False  # channels-last layout of the image encoder and its inputs
    device: str = "auto"  # auto: this process's GPU under torchrun (cuda:LOCAL_RANK), else cpu
    max_steps_per_epoch: int | None = None  # for smoke runs
    checkpoint_every: int = 200  # steps between mid-epoch training-state saves (0: epochs only)
