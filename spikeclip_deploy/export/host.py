"""The host part of an export: what the chip cannot run, as ONNX networks plus data files.

* ``image_encode.onnx``: uint8 ``[B,3,H,W]`` -> normalisation -> stem conv (BN folded) -> input
  current ``[B,C,H,W]`` (direct coding: the same current at every time step; rounded to the
  chip's input grid for quantization-aware models).
* ``text_encode.onnx``: token ids ``[B,L]`` -> token + position embeddings -> ``[B, L*E]``.
* ``*_readout.onnx``: last-layer spikes ``[B,T,...]`` -> token mean -> TDW -> projection ->
  L2-normalised embedding.
* ``SIDE_hostN.onnx``: each host op between chip subgraphs (with the host-placed synapses before
  it): the spikes it reads ``in0, in1, ...`` ``[B, ...]`` -> its current ``[B, ...]``, float
  (on the chip's input grid for quantization-aware models); the run side puts it on the chip's
  input grid (the op's ``output_quantization``).
* ``tokenizer/``: the teacher's tokenizer; ``labels.json`` + ``label_features.npy``: the default
  labels and their text features as the float model computes them.
"""
from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..exchange.nirgraph import HostOpNode
from ..fileutil import write_bytes
from ..lowering.fold import fold_conv_bn
from ..lowering.graph import Graph
from ..nn.encoders import Readout
from ..nn.spikeclip import SpikeCLIP


class ImageEncode(nn.Module):
    def __init__(self, model: SpikeCLIP) -> None:
        super().__init__()
        self.grid = model.image.input_grid
        w, b, conv = fold_conv_bn(model.image.encode)
        self.conv = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                              conv.padding, bias=True)
        self.conv.weight.data.copy_(torch.from_numpy(w))
        self.conv.bias.data.copy_(torch.from_numpy(b))
        self.register_buffer("mean", model.mean.clone())
        self.register_buffer("std", model.std.clone())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.grid(self.conv((images.float() / 255.0 - self.mean) / self.std))


class ReadoutHead(nn.Module):
    """``[B, T, C, *tokens]`` spikes -> normalised embedding (time axis second for batching)."""

    def __init__(self, readout: Readout) -> None:
        super().__init__()
        self.readout = readout

    def forward(self, spikes: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.readout(spikes.transpose(0, 1)), dim=-1)


def _onnx(module: nn.Module, example: torch.Tensor | tuple[torch.Tensor, ...], path: Path,
          in_name: str | list[str], out_name: str) -> None:
    module = module.eval()
    examples = example if isinstance(example, tuple) else (example,)
    in_names = in_name if isinstance(in_name, list) else [in_name]
    buf = io.BytesIO()  # serialise in memory: a full disk is then a plain, named OSError
    with torch.no_grad():
        torch.onnx.export(module, examples, buf, input_names=in_names, output_names=[out_name],
                          dynamic_axes={n: {0: "batch"} for n in (*in_names, out_name)},
                          opset_version=17, dynamo=False)
    write_bytes(path, buf.getvalue())


class HostSegment(nn.Module):
    """A host op with the host-placed synapses before it: spikes in, the op's current out."""

    def __init__(self, op: nn.Module, before: list[nn.Module]) -> None:
        super().__init__()
        self.op, self.before = op, nn.ModuleList(before)

    def forward(self, *spikes: torch.Tensor) -> torch.Tensor:
        return self.op.output_grid(self.op(*(pre(s) for pre, s in zip(self.before, spikes))))


def write_host_ops(encoder: nn.Module, graph: Graph, export_root: Path, side: str) -> Graph:
    """Write each host op of ``graph`` as ``host/SIDE_NAME.onnx`` under ``export_root``; return
    the graph with each op's file in its metadata (``onnx``)."""
    host_syn = graph.host_synapses()
    layers = []
    for la in graph.layers:
        if isinstance(la.node, HostOpNode):
            before = [encoder.get_submodule(host_syn[i].source) if i in host_syn else nn.Identity()
                      for i in la.inputs]
            rel = f"host/{side}_{la.name}.onnx"
            (export_root / "host").mkdir(exist_ok=True)
            examples = tuple(torch.zeros(1, *s) for s in la.node.input_shapes)
            _onnx(HostSegment(encoder.get_submodule(la.source), before), examples,
                  export_root / rel, [f"in{k}" for k in range(len(examples))], "current")
            la = dataclasses.replace(la, node=dataclasses.replace(
                la.node, metadata={**la.node.metadata, "onnx": rel}))
        layers.append(la)
    return graph.replace(layers=tuple(layers))


def host_macs(model: SpikeCLIP) -> dict[str, int]:
    """Multiply-accumulates of the host parts for one sample: the image stem convolution (its
    ``stride 1`` output is the full image) and each readout's projection."""
    stem = model.image.encode[0]
    return {"image_stem_macs": stem.out_channels * model.cfg.image_size**2 * stem.in_channels
            * stem.kernel_size[0] * stem.kernel_size[1],
            "image_readout_macs": model.image.readout.proj.weight.numel(),
            "text_readout_macs": model.text.readout.proj.weight.numel()}


def write_host_part(model: SpikeCLIP, folder: Path, tokenizer, labels: list[str],
                    label_features: torch.Tensor) -> dict:
    """Write the host part into ``folder``; returns its description for the manifest."""
    cfg = model.cfg
    folder.mkdir(parents=True, exist_ok=True)
    img = torch.zeros(1, 3, cfg.image_size, cfg.image_size, dtype=torch.uint8)
    _onnx(ImageEncode(model), img, folder / "image_encode.onnx", "images", "current")
    tokens = torch.zeros(1, cfg.context_length, dtype=torch.int64)
    _onnx(nn.Sequential(model.text.encode, model.text.input_grid), tokens,
          folder / "text_encode.onnx", "tokens", "current")
    for side, enc in (("image", model.image), ("text", model.text)):
        inp = model.normalize(img) if side == "image" else tokens
        with torch.no_grad():
            last = enc.run_stack(enc.current(inp))[-1]
        spikes = torch.zeros(1, *last.transpose(0, 1).shape[1:])
        _onnx(ReadoutHead(enc.readout), spikes, folder / f"{side}_readout.onnx", "spikes", "embedding")
    tokenizer.save_pretrained(str(folder / "tokenizer"))
    write_bytes(folder / "labels.json", (json.dumps(labels, indent=1) + "\n").encode())
    buf = io.BytesIO()
    np.save(buf, label_features.numpy().astype(np.float32))
    write_bytes(folder / "label_features.npy", buf.getvalue())
    return {**host_macs(model), "time_steps": cfg.time_steps,
            "context_length": cfg.context_length, "image_size": cfg.image_size, "labels": labels,
            "label_features": "float model, normalised mean over prompt templates"}


__all__ = ["write_host_part", "host_macs", "ImageEncode", "ReadoutHead"]
