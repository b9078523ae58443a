"""Where the student starts: its token table from the teacher's, or its text or image encoder
from another checkpoint (``--init-text-from``, ``--init-image-from``)."""
from __future__ import annotations

import torch

from ..checkpoint import load_tokenizer, read_safetensors, resolve_checkpoint
from ..config import ModelConfig
from ..errors import CheckpointError
from ..fileutil import sha256_file
from ..nn.spikeclip import SpikeCLIP
from ..teachers.base import Teacher

TEXT_FIELDS = ("text_arch", "vocab_size", "context_length", "text_width", "text_hidden",
               "embed_dim", "time_steps", "tau", "v_threshold", "tdw")  # define the text encoder


def init_text_embeddings(model: SpikeCLIP, teacher: Teacher) -> None:
    """Initialise the student's token table from the teacher's: a copy when the widths match,
    else a PCA projection to ``text_width`` dims."""
    emb = teacher.token_embeddings().float()
    vocab, width = model.text.encode.token.weight.shape
    if emb.shape[0] != vocab:
        raise CheckpointError(f"teacher vocabulary {emb.shape[0]} != model vocab_size {vocab}")
    if emb.shape[1] == width:
        model.text.encode.token.weight.data.copy_(emb)
        return
    centered = emb - emb.mean(0)
    _, _, v = torch.pca_lowrank(centered, q=width, center=False)
    proj = centered @ v[:, :width]
    model.text.encode.token.weight.data.copy_(proj / proj.std() * 0.5)


def text_encoder_from(model: SpikeCLIP, cfg: ModelConfig, name: str):
    """Load checkpoint ``name``'s text encoder into ``model`` -> (its description, its
    tokenizer)."""
    path = resolve_checkpoint(name)
    state, card = read_safetensors(path)
    src = card.get("config", {})
    differ = [f for f in TEXT_FIELDS if src.get(f) != getattr(cfg, f)]
    if differ:
        raise CheckpointError(f"{path} has another text encoder than '{cfg.name}' "
                              f"(config fields {', '.join(differ)} differ)")
    text = {k[len("text."):]: v for k, v in state.items() if k.startswith("text.")}
    model.text.load_state_dict(text)
    return {"checkpoint": path.name, "sha256": sha256_file(path)}, load_tokenizer(path)


def image_encoder_from(model: SpikeCLIP, cfg: ModelConfig, name: str) -> dict:
    """Load checkpoint ``name``'s image encoder into ``model`` -> its description."""
    path = resolve_checkpoint(name)
    state, _ = read_safetensors(path)
    image = {k[len("image."):]: v for k, v in state.items() if k.startswith("image.")}
    want = model.image.state_dict()
    missing = sorted(set(want) ^ set(image))
    shapes = [k for k in want if k in image and image[k].shape != want[k].shape]
    if missing or shapes:
        raise CheckpointError(f"{path}'s image encoder does not fit '{cfg.name}': "
                              f"{len(missing)} weights differ by name "
                              f"({', '.join(missing[:3]) or 'none'}), {len(shapes)} by shape "
                              f"({', '.join(shapes[:3]) or 'none'}); pick a checkpoint of the "
                              f"same architecture")
    model.image.load_state_dict(image)
    return {"checkpoint": path.name, "sha256": sha256_file(path)}
