r"""A model's size and dense cost, from its config alone: parameters, and the MACs of one image
inference run as an ANN (what an ANN twin computes, and the :math:`E_{ANN}` of the energy model).

An ANN twin (``neuron`` relu) has its spiking form's layers, ReLUs in place of the LIFs, so its
MACs are counted on the graph traced from that form: :func:`~.verify.energy.ann_macs` over its
synapse layers (a pool's window counted as a depthwise synapse, as verify counts it), the host
stem and readout, the same count that verify's ANN counterpart of the spiking model uses.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch

from .catalog import parameter_counts
from .config import ANN_IMAGE_ARCHS, ModelConfig
from .errors import ConfigError
from .export.host import host_macs
from .lowering.graph import run_side_layers, trace
from .nn.spikeclip import SpikeCLIP
from .verify.energy import ann_macs, host_op_macs, synapse_rows


def image_macs(cfg: ModelConfig) -> int:
    """MACs of one image inference of ``cfg``'s image encoder run as an ANN: every layer once,
    densely, host stem and readout included."""
    if cfg.image_arch in ANN_IMAGE_ARCHS:
        raise ConfigError(f"'{cfg.name}' (image_arch {cfg.image_arch}) has no chip graph to count "
                          f"MACs on; its twin is an image_arch native-spikingformer config with "
                          f"neuron relu")
    spiking = dataclasses.replace(cfg, neuron="lif", text_arch="spiking-mlp")
    model = SpikeCLIP(spiking).eval()
    with torch.no_grad():
        current = model.image.current(model.example_input("image"))
    layers = run_side_layers(trace(model.image, "image", current))
    host = host_macs(model)
    return ann_macs(host["image_stem_macs"], synapse_rows(layers), host_op_macs(layers),
                    host["image_readout_macs"])


def parameters(cfg: ModelConfig) -> dict[str, int]:
    """Parameters of ``cfg``'s image and text encoders and their total."""
    params = parameter_counts(cfg)
    return {"image": params["image_params"], "text": params["text_params"],
            "total": params["image_params"] + params["text_params"]}


def model_costs(cfg: ModelConfig) -> dict[str, Any]:
    """:func:`parameters` and :func:`image_macs` of ``cfg``."""
    return {"parameters": parameters(cfg), "image_macs": image_macs(cfg)}
