"""Zero-shot classification pieces shared by training, export, backends and verification."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .errors import DataError
from .prompts import CIFAR_TEMPLATES, prompts_for


def tokenize(tokenizer, texts: list[str], context_length: int) -> np.ndarray:
    """Token ids ``[B, context_length]`` (padded/truncated), int64."""
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=context_length,
                    return_tensors="np")
    return enc["input_ids"].astype(np.int64)


def class_weights(encode_texts: Callable[[list[str]], torch.Tensor], labels: list[str],
                  templates: tuple[str, ...] = CIFAR_TEMPLATES) -> torch.Tensor:
    r"""Per label, :math:`w_c = \mathrm{normalize}(\frac{1}{|P|}\sum_{p} f(p))` over its prompts."""
    if not labels:
        raise DataError("the label list is empty; pass at least one label")
    texts = [p for lbl in labels for p in prompts_for(lbl, templates)]
    feats = torch.as_tensor(encode_texts(texts)).reshape(len(labels), len(templates), -1)
    return F.normalize(feats.mean(1), dim=-1)


def student_text_encoder(model, tokenizer) -> Callable[[list[str]], torch.Tensor]:
    """``texts -> normalised features`` of a float SpikeCLIP's text encoder."""
    def encode(texts: list[str]) -> torch.Tensor:
        tokens = torch.from_numpy(tokenize(tokenizer, texts, model.cfg.context_length))
        with torch.no_grad():
            return model.encode_text(tokens.to(model.logit_scale.device)).cpu()
    return encode
