"""A real CLIP teacher loaded with ``open_clip`` from a local directory (no network).

Directory layout (the one open_clip's ``push_to_hf_hub.save_for_hf`` writes and open_clip hub
repositories such as ``laion/CLIP-ViT-B-32-laion2B-s34B-b79K`` hold)::

    DIR/
      open_clip_config.json          {"model_cfg": {"embed_dim": ..., "vision_cfg": {...},
                                                    "text_cfg": {...}, ...},
                                      "preprocess_cfg": {"mean": [...], "std": [...], ...}}
      open_clip_model.safetensors    the model's state dict (or open_clip_pytorch_model.bin)
      tokenizer files                only for text towers with ``text_cfg.hf_tokenizer_name``

``model_cfg`` is open_clip's model config dict (the content of its ``model_configs/*.json``);
``preprocess_cfg`` is optional (mean/std default to OpenAI CLIP's). The model is built with
``open_clip.create_model("local-dir:DIR")`` and the weights are loaded strictly with
``open_clip.load_checkpoint``, after a shape check so that a config that does not describe the
weights is reported instead of silently resampling position embeddings.

Tokenizer. The student consumes ids from a *transformers* tokenizer (``zeroshot.tokenize`` calls
it with ``padding="max_length"``; ``train`` saves it with ``save_pretrained`` beside the checkpoint
and export/verify reload it with ``AutoTokenizer``). The teacher's own features are always
computed with open_clip's tokenizer for the directory (``open_clip.get_tokenizer("local-dir:DIR")``),
exactly as open_clip would. What :meth:`OpenCLIPTeacher.tokenizer` returns depends on it:

* open_clip's default ``SimpleTokenizer`` (OpenAI CLIP's BPE): a ``transformers.CLIPTokenizer``
  built from that tokenizer's own vocabulary and merges (the same BPE, so the same ids; start and
  end tokens keep their ids 49406/49407 under transformers' names ``<|startoftext|>`` /
  ``<|endoftext|>``). Only the padding id differs (open_clip pads with 0, transformers with
  ``<|endoftext|>``); the student attends with its own mask and CLIP pools at the first end token.
* an ``HFTokenizer`` (``text_cfg.hf_tokenizer_name``; open_clip then reads the tokenizer files in
  DIR): the transformers tokenizer it wraps, i.e. the very object open_clip uses.

Wrapping open_clip's tokenizer in an ad-hoc object was rejected: the student's tokenizer must
survive ``save_pretrained`` / ``AutoTokenizer.from_pretrained`` beside the checkpoint and in the
export's host part.

Limitation: a text tower named by ``text_cfg.hf_model_name`` (a transformers model) needs that
model's config; give a local path there, a hub id works offline only if it is in the HF cache.
"""
from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import CheckpointError, ConfigError
from ..tokenizers import clip_tokenizer_from_simple
from .base import Teacher, to_pixels

log = logging.getLogger(__name__)

CONFIG_NAME = "open_clip_config.json"  # open_clip.constants.HF_CONFIG_NAME
WEIGHT_NAMES = ("open_clip_model.safetensors",  # open_clip.constants.HF_SAFE_WEIGHTS_NAME
                "open_clip_pytorch_model.bin")  # open_clip.constants.HF_WEIGHTS_NAME
_LAYOUT = (f"{CONFIG_NAME} ({{'model_cfg': ..., 'preprocess_cfg': ...}}) and {WEIGHT_NAMES[0]} "
           f"or {WEIGHT_NAMES[1]}, as written by open_clip.push_to_hf_hub.save_for_hf")
_INTERPOLATION = {"bicubic": "bicubic", "bilinear": "bilinear", "nearest": "nearest"}


def _short(exc: BaseException, limit: int = 400) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + " ..."


def read_layout(path: Path) -> tuple[dict, Path]:
    """Check DIR's layout -> (``open_clip_config.json`` content, weights file)."""
    if not path.is_dir():
        raise CheckpointError(f"open_clip teacher directory {path} does not exist; it must hold "
                              f"{_LAYOUT}")
    cfg_path = path / CONFIG_NAME
    if not cfg_path.is_file():
        raise CheckpointError(f"{cfg_path} is missing; {path} must hold {_LAYOUT}")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{cfg_path} is not readable JSON ({_short(exc)}); rewrite it with "
                              f"json.dump({{'model_cfg': model_cfg}}, f)") from exc
    if not isinstance(config, dict) or not isinstance(config.get("model_cfg"), dict):
        bare = isinstance(config, dict) and "vision_cfg" in config
        raise CheckpointError(
            f"{cfg_path} has no 'model_cfg' object; " + (
                "it looks like a bare open_clip model config: wrap it as "
                "{\"model_cfg\": <that config>, \"preprocess_cfg\": {}}" if bare else
                "write {\"model_cfg\": {\"embed_dim\": ..., \"vision_cfg\": {...}, "
                "\"text_cfg\": {...}}, \"preprocess_cfg\": {}}"))
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in config["model_cfg"]]
    if missing:
        raise CheckpointError(f"{cfg_path}: model_cfg lacks {missing}; it must be an open_clip "
                              f"model config (see open_clip/model_configs/*.json)")
    for name in WEIGHT_NAMES:
        if (path / name).is_file():
            return config, path / name
    raise CheckpointError(f"no weights in {path}: expected {WEIGHT_NAMES[0]} or {WEIGHT_NAMES[1]}; "
                          f"save them with safetensors.torch.save_file(model.state_dict(), "
                          f"'{path / WEIGHT_NAMES[0]}')")


def _file_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    """Tensor shapes stored in a weights file, without reading the tensors' data."""
    if weights.suffix == ".safetensors":
        from safetensors import safe_open
        with safe_open(str(weights), framework="pt") as f:
            names = f.keys()  # a safe_open handle is not a mapping
            return {k: tuple(f.get_slice(k).get_shape()) for k in names}
    try:
        state = torch.load(weights, map_location="cpu", mmap=True, weights_only=True)
    except RuntimeError:  # legacy (non-zip) torch.save format cannot be memory-mapped
        state = torch.load(weights, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    return {k.removeprefix("module."): tuple(v.shape) for k, v in state.items()
            if isinstance(v, torch.Tensor)}


class _DropRandomInitNote(logging.Filter):
    """open_clip logs 'initialized randomly' when building without weights; ours follow."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


@contextmanager
def _quiet_random_init_note():
    root, note = logging.getLogger(), _DropRandomInitNote()
    root.addFilter(note)
    try:
        yield
    finally:
        root.removeFilter(note)


def build_model(path: Path, weights: Path) -> torch.nn.Module:
    """``open_clip.create_model("local-dir:DIR")`` + a strict ``open_clip.load_checkpoint``."""
    import open_clip

    cfg_path = path / CONFIG_NAME
    try:
        with _quiet_random_init_note():
            model = open_clip.create_model(f"local-dir:{path}", load_weights=False,
                                           pretrained_image=False, pretrained_text=False)
    except Exception as exc:  # open_clip raises whatever its model constructors raise
        raise CheckpointError(f"{cfg_path}: open_clip cannot build a model from its model_cfg "
                              f"({type(exc).__name__}: {_short(exc)}); fix the config (keys as in "
                              f"open_clip/model_configs/*.json)") from exc
    try:
        stored = _file_shapes(weights)
    except Exception as exc:  # safetensors / pickle errors on a truncated or foreign file
        raise CheckpointError(f"{weights} is not a readable state dict ({_short(exc)}); re-save it "
                              f"with safetensors.torch.save_file(model.state_dict(), ...)") from exc
    expected = model.state_dict()
    wrong = [f"{k} {list(stored[k])} vs {list(v.shape)}" for k, v in expected.items()
             if k in stored and tuple(v.shape) != stored[k]]
    if wrong:
        raise CheckpointError(f"{weights} does not match {cfg_path}: wrong shapes (file vs config) "
                              f"{wrong[:5]}; the config must describe the model the weights were "
                              f"saved from (widths, layers, image/patch size, context length, vocab)")
    try:
        open_clip.load_checkpoint(model, str(weights), strict=True)
    except Exception as exc:  # missing/unexpected keys, unreadable file
        raise CheckpointError(f"{weights} does not match {cfg_path} ({_short(exc)}); save the "
                              f"weights and the config from the same open_clip model") from exc
    log.info("open_clip teacher %s loaded from %s", type(model).__name__, weights)
    return model.eval()


class OpenCLIPTeacher(Teacher):
    def __init__(self, path: Path) -> None:
        import open_clip
        from open_clip.tokenizer import HFTokenizer, SimpleTokenizer

        path = Path(path)
        config, weights = read_layout(path)
        self.name = f"open_clip:{path.resolve()}"
        self.model = build_model(path, weights)
        self.weights = weights
        try:
            self._oc_tokenizer = open_clip.get_tokenizer(f"local-dir:{path}")
        except (OSError, ValueError) as exc:
            raise CheckpointError(
                f"{path}: open_clip cannot load the tokenizer that {CONFIG_NAME} names "
                f"({_short(exc)}); save it into the directory with AutoTokenizer.from_pretrained("
                f"NAME).save_pretrained('{path}')") from exc
        if isinstance(self._oc_tokenizer, HFTokenizer):
            self._tokenizer = self._oc_tokenizer.tokenizer
        elif isinstance(self._oc_tokenizer, SimpleTokenizer):
            self._tokenizer = clip_tokenizer_from_simple(self._oc_tokenizer)
        else:
            raise ConfigError(f"{path}: open_clip tokenizer {type(self._oc_tokenizer).__name__} has "
                              f"no transformers equivalent for the student; use a model whose "
                              f"text_cfg names an hf_tokenizer_name")
        rows = self.token_embeddings().shape[0]
        if len(self._tokenizer) > rows:
            raise CheckpointError(f"{path}: the tokenizer has {len(self._tokenizer)} tokens but the "
                                  f"text tower's token table only {rows} rows; the config's "
                                  f"text_cfg.vocab_size must match the tokenizer")

        self.embed_dim = int(config["model_cfg"]["embed_dim"])
        self.logit_scale = float(self.model.logit_scale.detach().exp())
        pp = open_clip.get_model_preprocess_cfg(self.model)
        self.image_size = pp["size"]
        self._mean, self._std = tuple(pp["mean"]), tuple(pp["std"])
        self._interpolation = _INTERPOLATION.get(pp.get("interpolation", "bicubic"), "bicubic")
        size = (self.image_size,) * 2 if isinstance(self.image_size, int) else self.image_size
        if size[0] != size[1] and pp.get("resize_mode", "shortest") != "squash":
            log.warning("%s: non-square image size %s; 32x32 images are squashed to it, not "
                        "resized with resize_mode=%s", path, size, pp.get("resize_mode"))

    def describe(self) -> dict:
        return {**super().describe(), "weights": self.weights.name}

    def tokenizer(self):
        return self._tokenizer

    def token_embeddings(self) -> torch.Tensor:
        text = getattr(self.model, "text", self.model)  # CLIP keeps its text tower on itself
        emb = getattr(text, "token_embedding", None)
        if emb is None and hasattr(getattr(text, "transformer", None), "get_input_embeddings"):
            emb = text.transformer.get_input_embeddings()  # transformers text tower
        if emb is None:
            raise ConfigError(f"{self.name}: no token embedding table found in the text tower "
                              f"({type(text).__name__})")
        return emb.weight.detach()

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        pixels = to_pixels(images, self.image_size, self._mean, self._std, self._interpolation)
        return F.normalize(self.model.encode_image(pixels).float(), dim=-1)

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        return F.normalize(self.model.encode_text(self._oc_tokenizer(texts)).float(), dim=-1)
