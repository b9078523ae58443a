"""Zero-shot classification pieces shared by training, export, backends and verification."""
from __future__ import annotations

import logging
from collections import defaultdict
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .errors import DataError
from .prompts import CIFAR_TEMPLATES, prompts_for

log = logging.getLogger(__name__)


def tokenize(tokenizer, texts: list[str], context_length: int) -> np.ndarray:
    """Token ids ``[B, context_length]`` (padded/truncated), int64."""
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=context_length,
                    return_tensors="np")
    return enc["input_ids"].astype(np.int64)


def warn_indistinct_labels(tokenizer, labels: list[str]) -> None:
    """Log a warning naming labels the tokenizer cannot tell apart: labels of unknown tokens only
    (emoji for a WordPiece vocabulary) and labels with the same tokens (``Cat``/``cat`` for an
    uncased one) get meaningless or identical class weights."""
    groups: dict[tuple[int, ...], list[str]] = defaultdict(list)
    for label in labels:
        groups[tuple(tokenizer(label, add_special_tokens=False)["input_ids"])].append(label)
    unknown, alike = [], []
    for ids, same in groups.items():
        if all(i == tokenizer.unk_token_id for i in ids):
            unknown += same
        elif len(same) > 1:
            alike.append(same)
    if unknown:
        log.warning("labels %s are unknown tokens only to the tokenizer, so the model cannot "
                    "tell what they name; spell them in words", unknown)
    if alike:
        log.warning("labels %s tokenize identically (the tokenizer cannot tell them apart), so "
                    "they score the same; rename them to differ in words, not only in case",
                    alike)


def class_weights(encode_texts: Callable[[list[str]], torch.Tensor], labels: list[str],
                  templates: tuple[str, ...] = CIFAR_TEMPLATES) -> torch.Tensor:
    r"""Per label, :math:`w_c = \mathrm{normalize}(\frac{1}{|P|}\sum_{p} f(p))` over its prompts."""
    if not labels:
        raise DataError("the label list is empty; pass at least one label")
    texts = [p for lbl in labels for p in prompts_for(lbl, templates)]
    feats = torch.as_tensor(encode_texts(texts)).reshape(len(labels), len(templates), -1)
    return F.normalize(feats.mean(1), dim=-1)


def predict(feats: np.ndarray, class_w: np.ndarray) -> np.ndarray:
    r"""Zero-shot top-1: the index of the label whose class weight scores highest,
    :math:`\arg\max_c f \cdot w_c`, per row of image features ``feats``."""
    return (feats @ class_w.T).argmax(-1)


def student_text_encoder(model, tokenizer) -> Callable[[list[str]], torch.Tensor]:
    """``texts -> normalised features`` of a float SpikeCLIP's text encoder."""
    def encode(texts: list[str]) -> torch.Tensor:
        tokens = torch.from_numpy(tokenize(tokenizer, texts, model.cfg.context_length))
        with torch.no_grad():
            return model.encode_text(tokens.to(model.logit_scale.device)).cpu()
    return encode
