"""``spikeclip-deploy export``: checkpoint -> export directory (chip NIR + host part + manifest).

Layout::

    EXPORT/manifest.json            versions, target, dt, per-layer table, sha256 of every file
    EXPORT/chip/image_encoder.nir   spiking part of the image encoder (standard NIR nodes)
    EXPORT/chip/text_encoder.nir    spiking part of the text encoder
    EXPORT/host/...                 see :mod:`spikeclip_deploy.host`

The directory is built under a locked temporary name beside the destination, flushed to disk
and renamed into place, so a failure leaves nothing behind (a killed run's leftovers are removed
by the next run) and an existing export is never half-overwritten. ``--force`` replaces only a
directory that is an export of this tool, and a destination that appears while the export runs
is never silently replaced.
"""
from __future__ import annotations

import io
import json
import logging
import os
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Callable

import nir
import numpy as np
import torch

from . import __version__
from .checkpoint import load_model, load_tokenizer, resolve_checkpoint
from .errors import ExportError, HardwareLimitError, LoweringError
from .fileutil import (clean_stale, destination_lock, fsync_path, fsync_tree, glob_escape,
                       is_empty_dir, owned_tempdir, rename_noreplace, sha256_file, with_path,
                       write_bytes)
from .hardware import load_profile
from .host import write_host_part
from .lowering.fold import chain_to_graph, lower_stack
from .lowering.quantize import quantize_chain
from .lowering.resources import chain_resources
from .manifest import FORMAT, MANIFEST, is_export
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
    for pkg in ("torch", "nir", "lava-nc", "numpy", "onnx", "onnxruntime"):
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
    if enc.stack.inputs != tuple((i - 1,) for i in range(len(enc.stack))):
        raise LoweringError(f"the {side} encoder's chip graph is not a chain (fan-in of a "
                            f"residual stream, spike pooling): lowering such graphs is not "
                            f"supported yet. Export a conv-chain config such as spikeclip-tiny")
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


def check_replaceable(out: Path) -> None:
    """``--force`` replaces an export of this tool only, and never the working directory."""
    if not out.is_dir():
        raise ExportError(f"{out} exists and is not a directory; remove it or pass another --out")
    if Path.cwd().resolve().is_relative_to(out.resolve()):
        raise ExportError(f"--out {out} is (or holds) the current directory; --force will not "
                          f"replace it: pass a sub-directory such as --out exports/NAME")
    if not is_export(out):
        raise ExportError(f"{out} is not an export of this tool (no valid {MANIFEST}); --force "
                          f"replaces only exports: empty it yourself or pass another --out")


def _restore_replaced(out: Path) -> Callable[[Path], None]:
    """For a killed ``--force`` run caught between its two renames: put the old export back."""
    def restore(stale: Path) -> None:
        if (stale / "x").is_dir() and not out.exists():
            os.rename(stale / "x", out)
    return restore


def publish(tmp: Path, out: Path, force: bool) -> None:
    """Flush ``tmp`` and rename it to ``out`` under ``out``'s lock. A destination that exists
    by now (another run finished first) is replaced only with ``force`` and only if it is an
    export; the old one is moved aside first and removed after the swap."""
    fsync_tree(tmp)
    with destination_lock(out):
        if out.exists() and not is_empty_dir(out):
            if not force:
                raise ExportError(f"{out} appeared while this export ran (another run?); it was "
                                  f"left as it is: pass --force to replace it or --out elsewhere")
            check_replaceable(out)
            with owned_tempdir(out.parent, f".{out.name}.old-") as old:
                os.rename(out, old / "x")
                os.rename(tmp, out)
        else:
            rename_noreplace(tmp, out)
        fsync_path(out.parent)


def export_model(cfg: ExportConfig) -> tuple[Path, dict]:
    """Write an export; returns (directory, manifest)."""
    if cfg.target not in TARGETS:
        raise ExportError(f"unknown target '{cfg.target}'; choose one of {', '.join(TARGETS)}")
    out = Path(os.path.abspath(cfg.out if cfg.out else default_out(cfg.model, cfg.target)))
    existing = next(p for p in out.parents if p.exists())
    if not existing.is_dir():
        raise ExportError(f"--out {out}: {existing} is a file, not a directory; pass an --out "
                          f"inside a directory")
    # a killed run's leftovers: a half-replaced export is restored, then staging dirs removed
    clean_stale(out.parent, f".{glob_escape(out.name)}.old-*", _restore_replaced(out))
    if out.exists() and not is_empty_dir(out):
        if not cfg.force:
            raise ExportError(f"export directory {out} already exists; pass --force to replace "
                              f"it or --out to write elsewhere")
        check_replaceable(out)
    ckpt = resolve_checkpoint(cfg.model)
    model, card, _ = load_model(str(ckpt))
    profile = load_profile(cfg.hardware)
    tok_dir = ckpt.with_suffix(".tokenizer")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise with_path(exc, out.parent) from None
    with owned_tempdir(out.parent, f".{out.name}.tmp-") as tmp:
        (tmp / "chip").mkdir()
        layers, resources = {}, {}
        for side in ("image", "text"):
            graph, layers[side] = lower_encoder(model, side, cfg.target, profile)
            resources[side] = graph.metadata["resources"]
            buf = io.BytesIO()  # h5py crashes on a full disk: write the bytes ourselves
            nir.write(buf, graph)
            write_bytes(tmp / "chip" / f"{side}_encoder.nir", buf.getvalue())
        labels = card["metadata"].get("metrics", {}).get("labels") or []
        tokenizer = load_tokenizer(ckpt)
        label_w = (class_weights(student_text_encoder(model, tokenizer), labels) if labels
                   else torch.zeros(0, model.cfg.embed_dim))
        host = write_host_part(model, tmp / "host", tok_dir, labels, label_w)
        files = {p.relative_to(tmp).as_posix(): sha256_file(p)
                 for p in sorted(tmp.rglob("*")) if p.is_file()}
        manifest = {"format": FORMAT, "target": cfg.target, "dt": DT,
                    "discretisation": DISCRETISATION, "time_steps": model.cfg.time_steps,
                    "model": {"name": ckpt.stem, "config": model.cfg.to_dict(),
                              "checkpoint_sha256": card["sha256"],
                              "metrics": card["metadata"].get("metrics", {})},
                    "hardware": profile["name"] if cfg.target == "loihi" else None,
                    "versions": library_versions(), "layers": layers, "resources": resources,
                    "host": host, "files": files}
        write_bytes(tmp / MANIFEST,
                    (json.dumps(manifest, indent=1, default=_json_default) + "\n").encode())
        publish(tmp, out, cfg.force)
    return out, manifest


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o).__name__)
