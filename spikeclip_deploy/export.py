"""``spikeclip-deploy export``: checkpoint -> export directory (chip NIR + host part + manifest).

Layout::

    EXPORT/manifest.json            versions, target, dt, per-layer table, sha256 of every file
    EXPORT/chip/image_encoder.nir   spiking part of the image encoder (standard NIR nodes)
    EXPORT/chip/text_encoder.nir    spiking part of the text encoder
    EXPORT/host/...                 see :mod:`spikeclip_deploy.host`

The directory is built under a temporary name beside the destination and renamed into place,
so a failure leaves nothing behind and an existing export is never half-overwritten.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import nir
import numpy as np
import torch

from . import __version__
from .checkpoint import load_model, load_tokenizer, resolve_checkpoint
from .errors import ExportError, HardwareLimitError, LoweringError
from .fileutil import sha256_file
from .hardware import load_profile
from .host import write_host_part
from .lowering.fold import chain_to_graph, lower_stack
from .lowering.quantize import quantize_chain
from .lowering.resources import chain_resources
from .nn.encoders import SpikingEncoder
from .nn.spikeclip import SpikeCLIP
from .paths import PROJECT_ROOT
from .zeroshot import class_weights, student_text_encoder

log = logging.getLogger(__name__)
TARGETS = ("loihi", "cpu")
DT = 1.0
DISCRETISATION = ("forward Euler with dt=1 (one chip time step): v[t] = v[t-1] + dt/tau * "
                  "(v_leak - v[t-1] + r*I[t]); spike when v[t] > v_threshold; then v[t] = v_reset")


UNDEPLOYABLE = {
    "spikingformer": "the image encoder is a Spikingformer: its spiking self-attention multiplies "
                     "two spike tensors (Q K^T V), which no NIR node and no Lava fixed-point "
                     "process expresses, and its residual stream is real-valued; deploying it is "
                     "not supported yet. Export a conv-chain config such as spikeclip-tiny",
    "scratch-transformer": "this is the ANN counterpart (ScratchCLIP): nothing in it spikes, so "
                           "there is nothing to put on the chip",
    "ann-mlp": "the text encoder is an ANN (ScratchCLIP): nothing in it spikes",
}


@dataclass(frozen=True)
class ExportConfig:
    model: str
    target: str = "loihi"
    out: Path | None = None
    force: bool = False
    hardware: str = "loihi2"


def library_versions() -> dict[str, str]:
    out = {"spikeclip-deploy": __version__}
    for pkg in ("torch", "nir", "lava-nc", "lava-dl", "numpy", "onnx", "onnxruntime", "snntorch"):
        try:
            out[pkg] = importlib_metadata.version(pkg)
        except importlib_metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _layer_table(chain: list[tuple[str, nir.NIRNode]], in_shape: tuple[int, ...]) -> list[dict]:
    rows, shape = [], list(in_shape)
    for name, node in chain:
        row: dict[str, Any] = {"name": name, "type": type(node).__name__}
        if isinstance(node, nir.LIF):
            row["shape"] = list(np.asarray(node.tau).shape)
            shape = row["shape"]
        else:
            row["weight_shape"] = list(np.asarray(node.weight).shape)
            row["input_shape"] = shape
        row.update({k: v for k, v in node.metadata.items() if k in ("loihi", "scale")})
        rows.append(row)
    return rows


def _example_input(model: SpikeCLIP, side: str) -> torch.Tensor:
    cfg = model.cfg
    if side == "image":
        return torch.zeros(1, 3, cfg.image_size, cfg.image_size, dtype=torch.uint8)
    return torch.zeros(1, cfg.context_length, dtype=torch.int64)


def lower_encoder(model: SpikeCLIP, side: str, target: str, profile: dict
                  ) -> tuple[nir.NIRGraph, list[dict]]:
    """One encoder's chip part -> NIR graph (float for ``cpu``, fixed point for ``loihi``)."""
    enc = getattr(model, side)
    if not isinstance(enc, SpikingEncoder):
        arch = model.cfg.image_arch if side == "image" else model.cfg.text_arch
        raise LoweringError(UNDEPLOYABLE.get(arch, f"the {side} encoder ({arch}) is not a spiking "
                                             f"feed-forward chain and cannot be lowered"))
    with torch.no_grad():
        x = _example_input(model, side)
        current = enc.current(model.normalize(x) if side == "image" else x)
        out_shape = tuple(enc.run_stack(current)[-1].shape[2:])
    in_shape = tuple(current.shape[1:])
    chain = lower_stack(enc, in_shape)
    meta: dict[str, Any] = {"dt": DT, "discretisation": DISCRETISATION, "target": target,
                            "time_steps": model.cfg.time_steps, "input_coding": "direct",
                            "encoder": side, "producer": f"spikeclip-deploy {__version__}"}
    if target == "loihi":
        chain, input_q = quantize_chain(chain, profile)
        grid = enc.input_grid.grid
        chip = (input_q["input_scale"], *input_q["bias_mant_range"])
        if grid is not None and not np.allclose(grid, chip):
            raise LoweringError(f"the {side} encoder was trained for the input grid {grid} "
                                f"(scale, lo, hi), but '{profile['name']}' quantizes its input "
                                f"with {chip}; export to the hardware it was trained for")
        meta.update({"input_quantization": input_q, "hardware": profile["name"],
                     "synapse_delay_steps": profile["synapse_delay_steps"],
                     "units": "integer chip units; see each node's metadata['loihi']"})
    meta["resources"] = chain_resources(chain, in_shape)
    if target == "loihi":
        check_limits(meta["resources"], profile, side)
    return chain_to_graph(chain, in_shape, out_shape, meta), _layer_table(chain, in_shape)


def check_limits(resources: dict[str, int], profile: dict, side: str) -> None:
    """Neurons and synapses against the profile's per-chip limits (data in ``hardware/``)."""
    lim = profile["limits"]
    for kind in ("neurons", "synapses"):
        if resources[kind] > lim[f"{kind}_per_chip"]:
            raise HardwareLimitError(f"the {side} encoder needs {resources[kind]:,} {kind}; "
                                     f"{profile['name']} has {lim[f'{kind}_per_chip']:,} per chip: "
                                     f"use a smaller model config")


def default_out(model: str, target: str) -> Path:
    return PROJECT_ROOT / "exports" / f"{Path(model).stem}-{target}"


def export_model(cfg: ExportConfig) -> tuple[Path, dict]:
    """Write an export; returns (directory, manifest)."""
    if cfg.target not in TARGETS:
        raise ExportError(f"unknown target '{cfg.target}'; choose one of {', '.join(TARGETS)}")
    out = Path(cfg.out) if cfg.out else default_out(cfg.model, cfg.target)
    if out.exists() and not cfg.force:
        raise ExportError(f"export directory {out} already exists; pass --force to replace it "
                          f"or --out to write elsewhere")
    ckpt = resolve_checkpoint(cfg.model)
    model, card, _ = load_model(str(ckpt))
    profile = load_profile(cfg.hardware)
    tok_dir = ckpt.with_suffix(".tokenizer")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        (tmp / "chip").mkdir()
        layers, resources = {}, {}
        for side in ("image", "text"):
            graph, layers[side] = lower_encoder(model, side, cfg.target, profile)
            resources[side] = graph.metadata["resources"]
            nir.write(tmp / "chip" / f"{side}_encoder.nir", graph)
        labels = card["metadata"].get("metrics", {}).get("labels") or []
        tokenizer = load_tokenizer(ckpt)
        label_w = (class_weights(student_text_encoder(model, tokenizer), labels) if labels
                   else torch.zeros(0, model.cfg.embed_dim))
        host = write_host_part(model, tmp / "host", tok_dir, labels, label_w)
        files = {str(p.relative_to(tmp)): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        manifest = {"format": "spikeclip-deploy/export@1", "target": cfg.target, "dt": DT,
                    "discretisation": DISCRETISATION, "time_steps": model.cfg.time_steps,
                    "model": {"name": ckpt.stem, "config": model.cfg.to_dict(),
                              "checkpoint_sha256": card["sha256"],
                              "metrics": card["metadata"].get("metrics", {})},
                    "hardware": profile["name"] if cfg.target == "loihi" else None,
                    "versions": library_versions(), "layers": layers, "resources": resources,
                    "host": host, "files": files}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, default=_json_default) + "\n")
        if out.exists():  # --force: swap atomically, then drop the old one
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
            os.replace(out, old / "x")
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out, manifest


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o).__name__)


def load_export(folder: Path) -> dict:
    """Read and verify an export's manifest (every file's sha256)."""
    folder = Path(folder)
    path = folder / "manifest.json"
    if not path.is_file():
        raise ExportError(f"{folder} is not an export (no manifest.json); create one with "
                          f"`spikeclip-deploy export`")
    manifest = json.loads(path.read_text())
    for rel, digest in manifest["files"].items():
        f = folder / rel
        if not f.is_file() or sha256_file(f) != digest:
            raise ExportError(f"export file {f} is missing or modified (sha256 mismatch); "
                              f"re-run `spikeclip-deploy export --force`")
    return manifest
