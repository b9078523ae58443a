"""Model variants as registered configs (``models/configs/*.json``), like open_clip's."""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .fieldtypes import has_type, type_name
from .paths import models_dir

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: the neurons of a graph encoder: spiking (``lif``) or ``relu`` (an ANN twin, no time steps)
NEURONS = ("lif", "relu")
#: encoders without spikes (ScratchCLIP's)
ANN_IMAGE_ARCHS = ("scratch-transformer",)
ANN_TEXT_ARCHS = ("ann-mlp",)


@dataclass(frozen=True)
class ModelConfig:
    """A SpikeCLIP variant.

    ``image_arch``: ``conv-chain`` (host stem ``image_channels[0]``, one stride-2 spiking conv per
    further entry, a spiking 1x1 layer of ``image_mlp_hidden``: deployable), ``spikingformer``
    (tokenizer ``image_channels``, ``image_depth`` SSA blocks; ``spike_pool`` moves its max pools
    after the LIF), ``native-spikingformer`` (the chip-native variant: spike pooling, a depthwise
    ``token_mixer_kernel`` conv as token mixer) or ``scratch-transformer`` (the ANN
    counterpart). ``text_arch``: ``spiking-mlp`` or ``ann-mlp``. ``neuron``: ``lif``, or ``relu``
    for the ANN twin of a ``native-spikingformer`` (every LIF a ReLU, ``time_steps`` 1, the text
    encoder ``ann-mlp``: the same graph without spikes, ScratchCLIP's role)."""

    name: str
    embed_dim: int
    time_steps: int = 4
    tau: float = 2.0
    v_threshold: float = 1.0
    tdw: bool = True
    image_size: int = 32
    image_channels: tuple[int, ...] = (32, 64, 128)
    image_mlp_hidden: int = 512
    vocab_size: int = 30522
    context_length: int = 20
    text_width: int = 32
    text_hidden: int = 512
    image_arch: str = "conv-chain"
    text_arch: str = "spiking-mlp"
    image_depth: int = 4
    image_heads: int = 8
    attn_threshold: float = 0.5
    spike_pool: bool = False
    token_mixer_kernel: int = 3
    neuron: str = "lif"
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"a model config must be a JSON object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown model config keys {unknown}; known keys: {sorted(names)}")
        try:
            kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
            cfg = cls(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"incomplete model config: {exc}") from None
        cfg.validate()
        return cfg

    def validate(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not has_type(value, hints[f.name]):
                raise ConfigError(f"model config field '{f.name}' must be "
                                  f"{type_name(hints[f.name])}, got {value!r}")
        if self.time_steps < 1:
            raise ConfigError(f"time_steps must be >= 1, got {self.time_steps}")
        if self.token_mixer_kernel < 1 or self.token_mixer_kernel % 2 == 0:
            raise ConfigError(f"token_mixer_kernel must be odd and >= 1, got "
                              f"{self.token_mixer_kernel}")
        if self.neuron not in NEURONS:
            raise ConfigError(f"neuron must be one of {', '.join(NEURONS)}, got {self.neuron!r}")
        if self.neuron == "relu" and (self.image_arch, self.text_arch, self.time_steps) != (
                "native-spikingformer", "ann-mlp", 1):
            raise ConfigError(f"neuron relu (an ANN twin) needs image_arch native-spikingformer, "
                              f"text_arch ann-mlp and time_steps 1; got {self.image_arch}, "
                              f"{self.text_arch}, {self.time_steps}")
        if len(self.image_channels) < 1:
            raise ConfigError("image_channels needs at least the stem width")
        if self.image_size % 2 ** (len(self.image_channels) - 1):
            raise ConfigError(f"image_size {self.image_size} is not divisible by the conv strides")

    def ann_reason(self) -> str | None:
        """Why this model is (partly) an ANN, with nothing to run on a chip; None if it spikes."""
        parts = ([f"image_arch {self.image_arch}"] if self.image_arch in ANN_IMAGE_ARCHS else []) \
            + ([f"neuron {self.neuron}"] if self.neuron != "lif" else []) \
            + ([f"text_arch {self.text_arch}"] if self.text_arch in ANN_TEXT_ARCHS else [])
        return (f"'{self.name}' is an ANN ({', '.join(parts)}): nothing in it spikes"
                if parts else None)


_REGISTRY: dict[str, ModelConfig] = {}


def register_config(cfg: ModelConfig) -> None:
    _REGISTRY[cfg.name] = cfg


def _load_shipped() -> None:
    folder = models_dir() / "configs"
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text())
        data.setdefault("name", path.stem)
        register_config(ModelConfig.from_dict(data))


def list_configs() -> list[ModelConfig]:
    if not _REGISTRY:
        _load_shipped()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def get_config(name: str) -> ModelConfig:
    names = [c.name for c in list_configs()]
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model config '{name}'; registered: {', '.join(names)}")
    return _REGISTRY[name]


def config_from_file(path: Path) -> ModelConfig:
    try:
        return ModelConfig.from_dict(json.loads(Path(path).read_text()))
    except (OSError, json.JSONDecodeError, ConfigError) as exc:
        raise ConfigError(f"cannot read model config {path}: {exc}") from None


__all__ = ["ModelConfig", "register_config", "list_configs", "get_config", "config_from_file",
           "CLIP_MEAN", "CLIP_STD"]


def read_option_file(path: Path) -> dict[str, Any]:
    """A command's option values from a JSON or TOML file, keys normalised to ``snake_case``
    (``--finetune-epochs`` -> ``finetune_epochs``); lists become comma-separated strings."""
    import tomllib

    try:
        text = path.read_text()
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"cannot read option file {path}: {exc}; expected a JSON object or "
                          f"TOML table of option values") from None
    if not isinstance(data, dict):
        raise ConfigError(f"option file {path} must hold a JSON object / TOML table, "
                          f"got {type(data).__name__}")
    norm = lambda v: ",".join(map(str, v)) if isinstance(v, (list, tuple)) else v  # noqa: E731
    return {k.lstrip("-").replace("-", "_"): norm(v) for k, v in data.items()}
