"""``spikeclip-deploy export``, the build side's exporters: checkpoint -> export directory (chip
NIR, written here; the host part's ONNX, :mod:`.host`; lava-dl netx, :mod:`.netx`; the
manifest, :mod:`~spikeclip_deploy.exchange.manifest`).

Layout::

    EXPORT/manifest.json            versions, target, dt, per-layer table, sha256 of every file
    EXPORT/chip/image_encoder.nir   spiking part of the image encoder (standard NIR nodes)
    EXPORT/chip/text_encoder.nir    spiking part of the text encoder
    EXPORT/host/...                 see :mod:`.host`
    EXPORT/netx/SIDE_segN.net       with ``--format netx``: the chip graphs' chains as lava-dl
                                    netx networks, see :mod:`.netx`

The directory is built under a locked temporary name beside the destination, flushed to disk
and renamed into place, so a failure leaves nothing behind (a killed run's leftovers are removed
by the next run) and an existing export is never half-overwritten. ``--force`` replaces only a
directory that is an export of this tool, and a destination that appears while the export runs
is never silently replaced.
"""
from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Callable

import nir
import numpy as np
import torch

from .. import __version__
from ..checkpoint import default_checkpoint_name
from ..errors import ConfigError, ExportError, LoweringError
from ..exchange.manifest import FORMAT, MANIFEST, is_export, manifest_bytes
from ..exchange.attention import AttentionNode
from ..exchange.current_pool import PoolNode
from ..exchange.nirgraph import HostOpNode, graph_layers
from ..fileutil import (clean_stale, destination_lock, fsync_path, fsync_tree, glob_escape,
                       is_empty_dir, owned_tempdir, sha256_file, with_path, write_bytes)
from ..hardware import ChipProfile, load_profile
from ..lowering.graph import DISCRETISATION, DT, Graph, run_passes, to_nir, trace
from ..lowering.passes import LoweringContext, passes_named
from ..model_source import model_source
from ..nn.encoders import SpikingEncoder
from ..nn.spikeclip import SpikeCLIP
from ..progress import progress
from ..targets import Target, export_target
from ..zeroshot import class_weights, student_text_encoder
from .host import write_host_ops, write_host_part
from .netx import netx_profile, write_netx

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportConfig:
    model: str  # a checkpoint (name or path), or with init="random" a registered config
    target: str = "loihi"
    out: Path | None = None
    force: bool = False
    init: str = "checkpoint"  # or "random": a seeded random initialisation of the config
    seed: int = 0
    format: str = "nir"  # or "netx": also lava-dl netx files, biases on netx's grid
    residual: str = "graded"  # residual streams: graded relays, or "copies" per reader
    attention: str = "chip"  # spiking self-attention: on neuro-cores, or on the host
    current_pool: str = "chip"  # max pools of currents: on neuro-cores, or on the host


def library_versions() -> dict[str, str]:
    out = {"spikeclip-deploy": __version__}
    for pkg in ("torch", "nir", "lava-nc", "numpy", "onnx", "onnxruntime"):
        try:
            out[pkg] = importlib_metadata.version(pkg)
        except importlib_metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _layer_table(graph: Graph) -> list[dict]:
    rows = []
    for layer in graph.layers:
        node = layer.node
        row: dict[str, Any] = {"name": layer.name, "type": type(node).__name__,
                               "inputs": list(layer.inputs), "placement": layer.placement}
        if isinstance(node, nir.LIF):
            row["shape"] = list(np.asarray(node.tau).shape)
        elif isinstance(node, HostOpNode):
            row.update(op=node.op, shape=list(node.output_shape), reason=layer.reason)
        elif isinstance(node, AttentionNode):
            row.update(attention=node.spec.record(), shape=list(node.population.shape),
                       kind=node.population.kind, weight=node.weight, delays=list(node.delays))
        elif isinstance(node, PoolNode):
            row.update(current_pool=node.spec.record(), shape=list(node.population.shape),
                       kind=node.population.kind, delay=node.delay)
        elif isinstance(node, nir.Scale):  # a graded stream relay
            row.update(relay=node.metadata["relay"], shape=list(np.asarray(node.scale).shape))
        else:
            row["weight_shape"] = list(np.asarray(node.weight).shape)
        row.update({k: v for k, v in node.metadata.items()
                    if k in ("loihi", "scale", "onnx", "output_quantization", "macs", "delay",
                             "delays", "payload_bound")})
        rows.append(row)
    return rows


def trace_encoder(model: SpikeCLIP, side: str) -> Graph:
    """One encoder's chip graph, traced from the model (float, BatchNorm not yet folded)."""
    enc, ann = getattr(model, side), model.cfg.ann_reason()
    if ann:
        raise LoweringError(f"{ann}, so there is nothing to put on a chip")
    if not isinstance(enc, SpikingEncoder):
        raise LoweringError(f"the {side} encoder ({type(enc).__name__}) is not a spiking encoder "
                            f"with a chip graph and cannot be lowered")
    with torch.no_grad():
        current = enc.current(model.example_input(side))
    graph = trace(enc, side, current)
    return graph.replace(meta={"time_steps": model.cfg.time_steps, "input_coding": "direct",
                               "encoder": side, "producer": f"spikeclip-deploy {__version__}"})


def lower_encoder(model: SpikeCLIP, side: str, target: Target,
                  profile: ChipProfile | None = None, residual: str = "graded",
                  attention: str = "chip", current_pool: str = "chip") -> Graph:
    """Trace one encoder and run the target's passes over it (``profile``: instead of the
    target's own; ``residual``: how residual streams reach their readers, graded relays or
    per-reader copies; ``attention``, ``current_pool``: spiking self-attention, max pools of
    currents on neuro-cores or the host)."""
    graph = trace_encoder(model, side)
    graph = graph.replace(meta={**graph.meta, "target": target.name})
    if profile is None and target.hardware:
        profile = load_profile(target.hardware)
    ctx = LoweringContext(target.name, profile, getattr(model, side).input_grid.grid, residual,
                          attention, current_pool)
    return run_passes(graph, passes_named(target.passes), ctx)


def default_out(model: str, target: str) -> Path:
    """Where ``export`` writes without ``--out``: ``exports/MODEL-TARGET`` under the working
    directory."""
    return Path.cwd() / "exports" / f"{Path(model).stem}-{target}"


def scratch_export(model: str, target: str, init: str, seed: int, out: Path) -> Path:
    """``model``'s export for ``target`` written to ``out`` for a command given no export (a
    :data:`~.verify.harness.ExportMaker`), saying so."""
    log.warning("no --export given: exporting %s for --target %s first (pass --export DIR, "
                "made by `spikeclip-deploy export`, to reuse one)", model, target)
    return export_model(ExportConfig(model=model, target=target, out=out, init=init,
                                     seed=seed))[0]


def default_export(target: str) -> Path:
    """The shipped model's export for ``target`` (:func:`default_out`), made first if there is
    none yet (saying so); one that another run made meanwhile is used as it is."""
    name, target = default_checkpoint_name(), export_target(target).name
    out = default_out(name, target)
    if not out.exists():
        log.warning("no export at %s yet: creating it from the shipped model %s (as "
                    "`spikeclip-deploy export --target %s` does)", out, name, target)
        try:
            export_model(ExportConfig(model=name, target=target, out=out))
        except ExportError:
            if not is_export(out):
                raise
            log.warning("another run created %s meanwhile: using it", out)
    return out


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
                try:
                    os.rename(tmp, out)
                except OSError:
                    os.rename(old / "x", out)  # put the old export back before failing
                    raise
        else:
            os.rename(tmp, out)  # also replaces an empty directory
        fsync_path(out.parent)


def export_model(cfg: ExportConfig) -> tuple[Path, dict]:
    """Write an export (a target that runs another's export writes that one); returns
    (directory, manifest)."""
    target = export_target(cfg.target)
    profile = _format_profile(cfg.format, target)
    out = Path(os.path.abspath(cfg.out if cfg.out else default_out(cfg.model, target.name)))
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
    model, tokenizer, info = model_source(cfg.model, cfg.init, cfg.seed)
    ann = model.cfg.ann_reason()
    if ann:
        raise ConfigError(f"cannot export {cfg.model} for --target {target.name}: {ann}, so "
                          f"nothing runs on a chip. Export its spiking counterpart (e.g. "
                          f"spikeclip-native-small for scratchclip-native-small); measure the ANN "
                          f"with `spikeclip-deploy verify` (its float model) and compare the two "
                          f"with `spikeclip-deploy report`")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise with_path(exc, out.parent) from None
    with owned_tempdir(out.parent, f".{out.name}.tmp-") as tmp:
        (tmp / "chip").mkdir()
        layers, resources, partition, netx, streams, attention, pools = ({}, {}, {}, {}, {}, {},
                                                                         {})
        for side in progress(("image", "text"), desc=f"export ({target.name})", unit="encoder"):
            graph = write_host_ops(getattr(model, side),
                                   lower_encoder(model, side, target, profile, cfg.residual,
                                                 cfg.attention, cfg.current_pool), tmp, side)
            layers[side], resources[side] = _layer_table(graph), graph.meta["resources"]
            partition[side] = graph.meta["partition"]
            streams[side] = graph.meta.get("streams", {})
            attention[side] = graph.meta["attention"]["layers"]
            if "current_pool" in graph.meta:  # only where the model max-pools currents
                pools[side] = graph.meta["current_pool"]["layers"]
            buf = io.BytesIO()  # h5py crashes on a full disk: write the bytes ourselves
            chip = to_nir(graph)
            nir.write(buf, chip)
            write_bytes(tmp / "chip" / f"{side}_encoder.nir", buf.getvalue())
            if cfg.format == "netx":
                netx[side] = write_netx(graph_layers(chip), profile.fixed_point.activation_shift,
                                        tmp, side)
        labels = info["metrics"].get("labels") or []
        label_w = (class_weights(student_text_encoder(model, tokenizer), labels) if labels
                   else torch.zeros(0, model.cfg.embed_dim))
        host = write_host_part(model, tmp / "host", tokenizer, labels, label_w)
        files = {p.relative_to(tmp).as_posix(): sha256_file(p)
                 for p in sorted(tmp.rglob("*")) if p.is_file()}
        manifest = {"format": FORMAT, "target": target.name, "dt": DT,
                    "discretisation": DISCRETISATION, "time_steps": model.cfg.time_steps,
                    "model": {**info, "config": model.cfg.to_dict()},
                    "hardware": target.hardware,
                    "chip": profile.record.to_json() if profile else None,
                    "passes": list(target.passes),
                    "residual": cfg.residual,
                    "attention": {"form": cfg.attention, "layers": attention},
                    **({"current_pool": {"form": cfg.current_pool, "layers": pools}} if pools
                       else {}),
                    "versions": library_versions(), "layers": layers, "resources": resources,
                    "partition": partition, "streams": streams,
                    "host": host, "files": files, **({"netx": netx} if netx else {})}
        write_bytes(tmp / MANIFEST, manifest_bytes(manifest, _json_default))
        publish(tmp, out, cfg.force)
    return out, manifest


FORMATS = ("nir", "netx")


def _format_profile(fmt: str, target: Target) -> ChipProfile | None:
    """The chip profile an export of ``fmt`` lowers with (None: the target's float)."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown --format '{fmt}'; choose one of {', '.join(FORMATS)}")
    profile = load_profile(target.hardware) if target.hardware else None
    if fmt == "nir":
        return profile
    if target.name != "loihi":
        raise ExportError(f"--format netx writes Loihi networks; pass --target loihi, not "
                          f"{target.name}")
    return netx_profile(profile)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o).__name__)
