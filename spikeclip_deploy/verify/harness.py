"""``verify`` and ``energy``: the float model and a set of backends on the same images.

The images stream through in batches: per batch, the float model and every backend predict, the
spiking backends' spikes are tallied (firing rates, synaptic operations) and compared pairwise
(:mod:`.divergence`), then dropped, so memory does not grow with the data. The emulator runs on
every image; Lava confirms it on the first ``lava_limit`` images of the selection. The
evaluation produces a partial result (:mod:`.results`) that :func:`~.results.summarize` turns
into the report, for one run, a shard, or shards merged.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, replace
from itertools import combinations
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..backends import open_backend
from ..backends.base import Backend
from ..data import content_digest, load_dataset
from ..errors import ConfigError, DataError, ExportError, HardwareLimitError
from ..fileutil import owned_tempdir
from ..exchange.manifest import DIGEST
from ..progress import progress
from ..label_sets import resolve_labels, resolve_templates
from ..mapping import assume, chip_of, map_side
from ..model_source import model_first
from ..robustness import with_distractors, with_synonyms
from ..targets import export_target
from ..zeroshot import class_weights, predict, student_text_encoder, warn_indistinct_labels
from .chip_energy import placement_state
from .divergence import Divergence
from .energy import SpikeTally
from .float_model import FloatPieces
from .results import (
    KEYS,
    ORDER,
    PARTIAL_FORMAT,
    check_bit_exact,
    merge_partials,
    read_partial,
    summarize,
    write_json,
)
from .selection import Selection, Shard, data_record, select
from .work_queue import WorkQueue, work_queue

log = logging.getLogger(__name__)

#: backends run on every image when none are named, per export target
DEFAULT_BACKENDS = {"loihi": ("loihi-emu",), "cpu": ("cpu",)}
LAVA = "loihi"
#: ``(model, target, init, seed, out) -> out``: writes the export a verification needs when it is
#: given none (the command line passes its exporter; the run side never builds one itself)
ExportMaker = Callable[[str, str, str, int, Path], Path]
#: ``(result, raster or None) -> None``: draws a verification's figures (the command line passes
#: its plotter for ``--plots``)
Figures = Callable[[dict[str, Any], dict[str, Any] | None], None]


@dataclass(frozen=True)
class VerifyConfig:
    model: str
    data: Path
    target: str = "loihi"  # the export's target
    backends: tuple[str, ...] | None = None  # on every image (None: DEFAULT_BACKENDS)
    lava_limit: int = 16  # Lava confirms the first N images (a loihi export; 0: no Lava)
    split: str = "all"  # all, or the training's stratified val / train split
    limit: int | None = None  # the first N images of the split's seeded order (None: all)
    shard: Shard = Shard()
    download: bool = False  # let torchvision fetch a torchvision:NAME:ROOT dataset
    val_fraction: float = 0.1
    seed: int = 0
    labels: str | None = None  # a label set name, file or comma list (None: the class names)
    templates: str = "cifar"  # a template set name or file
    energy_model: str = "energy-45nm"
    chip_energy_model: str = "energy-loihi"  # the chip's own, with the mapper's placement
    system: str = "kapoho-point"  # the board the image encoder is mapped onto for it
    assumptions: tuple[str, ...] = ()  # KEY=VALUE per-core figures replacing the profile's
    export: Path | None = None  # an existing export of ``target`` to use as is
    make_export: ExportMaker | None = None  # without ``export``: writes one in a scratch dir
    noisy_factor: int = 1  # robustness: labels x factor with distractors
    synonym_fraction: float = 0.0  # robustness: this fraction of labels replaced by synonyms
    batch_size: int = 64  # images per step of the stream (bounds memory; one Lava run each)
    init: str = "checkpoint"  # or "random": model is a registered config, seeded by init_seed
    init_seed: int = 0
    chip: str = "auto"  # where Lava runs: hw (Loihi 2 hardware), sim, auto (hw if there is one)


def _plan(cfg: VerifyConfig, ann: str | None) -> list[tuple[str, str, int | None]]:
    """``(result key, backend, image cap or None)`` for every backend to run; none (the float
    model only) for an ANN (``ann``: why it is one) or for no backends and no Lava sample."""
    if ann:
        if cfg.backends:
            raise ConfigError(f"{ann}: no backend runs it and there are no spikes to count; "
                              f"verify evaluates its float model only (give no --backends)")
        return []
    target = export_target(cfg.target).name
    names = cfg.backends if cfg.backends is not None else DEFAULT_BACKENDS[target]
    for name in names:
        if name not in KEYS:
            raise ConfigError(f"unknown backend '{name}'; choose from {', '.join(KEYS)}")
    plan = [(KEYS[name], name, None) for name in dict.fromkeys(names)]
    if target == LAVA and cfg.lava_limit and LAVA not in names:
        plan.append((KEYS[LAVA], LAVA, cfg.lava_limit))
    return plan


def evaluate(cfg: VerifyConfig) -> dict[str, Any]:
    """Run the verification's evaluation -> its partial result (see :mod:`.results`)."""
    start = time.perf_counter()
    model, info, load_tokenizer = model_first(cfg.model, cfg.init, cfg.init_seed)
    ds = load_dataset(cfg.data, model.cfg.image_size, download=cfg.download)
    sel = select(ds, cfg.split, cfg.val_fraction, cfg.seed, cfg.limit, cfg.shard)
    classes = (resolve_labels(cfg.labels, ds.class_names) if cfg.labels
               else list(ds.class_names))
    query = with_distractors(with_synonyms(classes, cfg.synonym_fraction), cfg.noisy_factor)
    templates = resolve_templates(cfg.templates)
    plan = _plan(cfg, model.cfg.ann_reason())
    target = export_target(cfg.target).name
    backends, export, energy = {}, None, None  # no plan: the float model only
    with owned_tempdir(None, "spikeclip-verify-") as workdir, ExitStack() as stack:
        # the float model's first pieces run beside the rest of the set-up: the tokenizer, the
        # export, the backends
        beside = torch.get_num_threads() > 1 and bool(plan)
        queue = stack.enter_context(_beside(torch.get_num_threads() if beside else 1))
        floats = FloatPieces(model, ds.images, sel.index.numpy(), cfg.batch_size, bool(plan),
                             queue)
        floats.submit_ahead(0)
        tokenizer = load_tokenizer()
        warn_indistinct_labels(tokenizer, query)
        weights = {"float": class_weights(student_text_encoder(model, tokenizer), query,
                                          templates).numpy()}
        if plan:
            export_dir = cfg.export or export_made_by(cfg.make_export, cfg.model, target,
                                                      cfg.init, cfg.init_seed, workdir / target)
            backends = open_backends(stack, {key: name for key, name, _ in plan}, export_dir,
                                     info, cfg.chip)
            first = next(iter(backends.values()))
            manifest = first.manifest
            export = {"target": manifest["target"], "path": str(cfg.export) if cfg.export
                      else None, "sha256": _export_digest(manifest)}
            energy = {"model": cfg.energy_model, "stem_macs": manifest["host"]["image_stem_macs"],
                      "readout_macs": manifest["host"]["image_readout_macs"]}
            if manifest.get("hardware"):  # a chip to price and map onto
                energy.update(chip_model=cfg.chip_energy_model,
                              placement=_placement(first.export_dir, cfg.system,
                                                   cfg.assumptions))
        for key, b in backends.items():
            with queue.hold() if b.forks else nullcontext():  # no float piece while it forks
                weights[key] = b.class_weights(query, templates)
        log.info("time: set-up (model, data, export, backends, class weights) %.1f s",
                 time.perf_counter() - start)
        run = _stream(ds.images, sel, plan, backends, weights, cfg.batch_size, floats, queue,
                      beside)
        described = {key: {"backend": name, "runs": backends[key].description, "limit": cap}
                     for key, name, cap in plan}
    return {
        "format": PARTIAL_FORMAT, "shard": [cfg.shard.index, cfg.shard.count],
        "run": {
            "model": info["name"], "weights": info["weights"], "seed": info.get("seed"),
            "checkpoint_sha256": info["checkpoint_sha256"],
            "checkpoint_metrics": info["metrics"],
            "data": data_record(cfg.data, cfg.split, cfg.val_fraction, cfg.seed, cfg.limit,
                                sel, content_digest(ds)),
            "classes": classes, "labels": query, "templates": list(templates),
            "protocol": {"noisy_factor": cfg.noisy_factor,
                         "synonym_fraction": cfg.synonym_fraction},
            "config": json.loads(json.dumps(model.cfg.to_dict())),  # as a JSON file holds it
            "export": export, "backends": described,
            "lava_limit": cfg.lava_limit, "energy": energy,
        },
        "positions": sel.positions.tolist(), "index": sel.index.tolist(),
        "labels": ds.labels[sel.index].tolist(), **run,
    }


def run_verification(cfg: VerifyConfig) -> dict[str, Any]:
    """Evaluate and summarize: zero-shot accuracy of the float model and every backend (with
    95 % intervals and per class), their agreement, where their spikes diverge, firing rates,
    and the energy report from the emulator's spikes (Lava's when the emulator did not run).
    An ANN (a ScratchCLIP, an ANN twin), or ``backends=()`` with ``lava_limit=0``: the float
    model's accuracy only, nothing exported."""
    return summarize(evaluate(cfg))


def evaluate_sharded(cfg: VerifyConfig) -> dict[str, Any] | None:
    """:func:`evaluate`; under ``torchrun`` (``WORLD_SIZE`` > 1, no explicit shard) every rank
    evaluates shard ``RANK/WORLD_SIZE`` and rank 0 returns the merged partial result (the other
    ranks None)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1 or cfg.shard.count > 1:
        return evaluate(cfg)
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    rank = dist.get_rank()
    part = evaluate(replace(cfg, shard=Shard(rank, dist.get_world_size())))
    parts = [None] * dist.get_world_size() if rank == 0 else None
    dist.gather_object(part, parts, dst=0)
    return merge_partials(parts) if rank == 0 else None


def _stream(images: torch.Tensor, sel: Selection, plan, backends: dict, weights: dict,
            batch_size: int, floats: FloatPieces, queue: WorkQueue, beside: bool
            ) -> dict[str, Any]:
    """The batch loop: predictions, spike tallies (the float model's too, in the chip graph's
    LIFs), pairwise divergence, and the spike raster of the selection's first image. The float
    model runs in pieces (:mod:`.float_model`) on ``queue`` (:func:`_beside`): with two or more
    threads (:func:`~..machine.set_threads`; ``beside``), a thread of its own takes them beside the
    backends, the threads split between them (each part then runs on whole cores: their
    operations scale poorly over threads), and this thread, its own part of a batch done, takes
    the pieces of the batch still waiting. A backend that forks (Lava) runs only while no piece
    runs."""
    n = len(sel.index)
    positions = sel.positions.numpy()
    preds = {key: np.full(n, -1, dtype=np.int64) for key in ("float", *backends)}
    tallies = {key: SpikeTally(b.layers["image"], b.time_steps) for key, b in backends.items()}
    divs = {(a, b): Divergence(tallies[a].state()["lif_shapes"], tallies[a].state()["time_steps"])
            for a, b in combinations(sorted(tallies, key=ORDER.index), 2)}
    if backends:  # the float model's spikes, LIF for LIF of the chip graph
        chip = next(iter(backends.values()))
        tallies["float"] = SpikeTally(chip.layers["image"], chip.time_steps)
    raster, seconds, clock = None, defaultdict(float), time.perf_counter()

    def lap(what: str) -> None:
        nonlocal clock
        seconds[what] += time.perf_counter() - clock
        clock = time.perf_counter()

    def float_tally() -> None:
        for (lo, hi, feats, counts, steps), took in queue.done():
            preds["float"][lo:hi] = predict(feats, weights["float"])
            if counts is not None:
                tallies["float"].add_counts(counts, steps if tallies["float"].needs_steps
                                            else None)
            seconds["float model"] += took

    with progress(None, total=n, desc="verify", unit="img") as bar:
        for start in range(0, n, batch_size):
            sl = slice(start, start + batch_size)
            batch = images[sel.index[sl]]
            mine = floats.pieces_before(start + len(batch))  # this batch's pieces
            floats.submit_ahead(start + len(batch))
            spikes = {}
            for key, name, cap in plan:
                take = positions[sl] < cap if cap is not None else np.ones(len(batch), bool)
                if take.any():
                    forks = backends[key].forks
                    if forks:
                        queue.help(mine)
                        lap("float model (on this thread)")
                    with queue.hold() if forks else nullcontext():  # no float piece runs
                        if forks:
                            lap("waiting for the float model")
                        feats, s = backends[key].encode_images(
                            batch[torch.from_numpy(take)].numpy())
                    preds[key][np.flatnonzero(take) + start] = predict(feats, weights[key])
                    lap(name)
                    tallies[key].add(s)
                    spikes[key] = (take, s)
                    lap("tallies and divergence")
            for (a, b), div in divs.items():
                if a in spikes and b in spikes:
                    (take_a, s_a), (take_b, s_b) = spikes[a], spikes[b]
                    both = take_a & take_b
                    div.add(positions[sl][both], [x[both[take_a]] for x in s_a],
                            [x[both[take_b]] for x in s_b])
            if raster is None and spikes and positions[start] == 0:
                raster = _raster(spikes, tallies, int(sel.index[start]))
            lap("tallies and divergence")
            queue.help(mine)  # this batch's float pieces the other thread has not taken
            lap("float model (on this thread)")
            float_tally()
            lap("tallies and divergence")
            bar.update(len(batch))
        queue.idle()
        lap("waiting for the float model")
        float_tally()
        lap("tallies and divergence")
    log.info("time: %s%s", ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()),
             " (the float model on both threads, beside the rest, from the set-up on: the other "
             "parts add up to the stream's wall time)" if beside else "")
    return {"preds": {k: v.tolist() for k, v in preds.items()},
            "tallies": {k: t.state() for k, t in tallies.items()},
            "divergence": {f"{a}_vs_{b}": d.state() for (a, b), d in divs.items()},
            **({"raster": raster} if raster else {})}


@contextmanager
def _beside(threads: int) -> Iterator[WorkQueue]:
    """The float model's :class:`~.work_queue.WorkQueue`. With ``threads`` > 1, a thread of
    its own runs it too, beside the caller: ``threads // 2`` torch threads (torch's count is the
    process's) and one numba thread there (its kernels then run serially, never on numba's pool,
    :func:`~..machine.by_threads`), the calling thread keeping the other
    ``threads - threads // 2`` numba threads; both counts restored after. Else the caller runs
    every piece."""
    if threads < 2:
        with work_queue(False) as queue:
            yield queue
        return
    import numba

    mine = numba.get_num_threads()
    torch.set_num_threads(threads // 2)
    numba.set_num_threads(threads - threads // 2)
    try:
        with work_queue(True, lambda: numba.set_num_threads(1)) as queue:
            yield queue
    finally:
        torch.set_num_threads(threads)
        numba.set_num_threads(mine)


def _raster(spikes: dict[str, tuple[np.ndarray, list[np.ndarray]]],
            tallies: dict[str, SpikeTally], index: int) -> dict[str, Any] | None:
    """The spikes of the selection's first image (its batch's first) on the first backend of
    :data:`~.results.ORDER` that ran it, per LIF: ``shape`` ``[T, *shape]`` and the flat
    ``spikes`` indices (JSON-ready and small: one image)."""
    key = next((k for k in ORDER if k in spikes and spikes[k][0][0]), None)
    if key is None:
        return None
    names = tallies[key].state()["lif_shapes"]
    return {"backend": key, "position": 0, "index": index,
            "layers": {name: {"shape": list(s.shape[1:]), "spikes": np.flatnonzero(s[0]).tolist()}
                       for name, s in zip(names, spikes[key][1], strict=True)}}


def export_made_by(make: ExportMaker | None, model: str, target: str, init: str, seed: int,
                   out: Path) -> Path:
    """The export of ``model`` that ``make`` writes to ``out``, for a run given no export; with
    no ``make`` (a library call that passed neither), a ConfigError asking for one."""
    if make is None:
        raise ConfigError(f"no export of {model} for --target {target} was given; make one with "
                          f"`spikeclip-deploy export --target {target}` and pass it (--export)")
    return make(model, target, init, seed, out)


def open_backends(stack: ExitStack, names: Mapping[str, str], export_dir: Path, info: dict,
                  chip: str = "auto") -> dict[str, Backend]:
    """Backends (result key -> backend name), entered in ``stack``, on ``export_dir``, which
    must hold the model ``info`` describes (:func:`~..model_source.model_source`); ``chip``:
    where Lava runs (:func:`~..backends.open_backend`)."""
    backends = {key: stack.enter_context(open_backend(name, export_dir, chip))
                for key, name in names.items()}
    _check_made_from(next(iter(backends.values())).manifest["model"], info, export_dir)
    return backends


def _placement(export_dir: Path, system: str, assumptions: tuple[str, ...]) -> dict[str, Any]:
    """The image encoder's placement for the chip energy model (the per-core figures
    ``assumptions`` replacing the profile's, :func:`~..mapping.assume`), or why it has none."""
    cores, assumed = assume(chip_of(export_dir)[1], assumptions)
    record = {"assumptions": assumed} if assumed else {}
    try:
        return {**placement_state(map_side(export_dir, "image", system, cores), system), **record}
    except HardwareLimitError as exc:
        log.warning("the chip energy model counts no spike messages: %s", exc)
        return {"system": system, "error": str(exc), **record}


def _export_digest(manifest: dict) -> str:
    """One hash of an export: of its manifest's sealed field digests (every field, the files'
    sha256 among them): shards of one verification must have run the same export."""
    return hashlib.sha256(json.dumps(manifest[DIGEST], sort_keys=True).encode()).hexdigest()


def _check_made_from(made: dict, info: dict, export_dir: Path) -> None:
    """The export must hold the model verify compares it against."""
    keys = ("weights", "checkpoint_sha256") if info["weights"] == "checkpoint" else \
        ("weights", "name", "seed")
    if any(made.get(k) != info[k] for k in keys):
        what = (f"checkpoint {info['name']}" if info["weights"] == "checkpoint" else
                f"the random initialisation of '{info['name']}' with seed {info['seed']}")
        source = (f"a random initialisation of '{made.get('name')}' (seed {made.get('seed')})"
                  if made.get("weights") == "random-init" else f"checkpoint {made.get('name')}")
        raise ExportError(f"export {export_dir} holds {source}, not {what}; pass the matching "
                          f"--model (with --init random --seed N for a random initialisation) "
                          f"or re-export")


def verify(cfg: VerifyConfig, json_path: Path | None = None, energy_json: Path | None = None,
           figures: Figures | None = None) -> dict[str, Any] | None:
    """:func:`evaluate_sharded`, then the outputs: a complete run writes its summary to
    ``json_path`` (its energy report to ``energy_json``, and hands it to ``figures``)
    and returns it; a shard writes its partial result to ``json_path`` (for ``verify merge``)
    and returns its own summary; a torchrun rank other than 0 returns None. Raises
    :class:`~..errors.VerificationError` after writing when the emulator's spikes differ from
    Lava's."""
    if cfg.shard.count > 1 and json_path is None:
        raise ConfigError(f"--shard {cfg.shard} writes a partial result for `verify merge`: "
                          f"give --json PATH")
    partial = evaluate_sharded(cfg)
    return None if partial is None else _finish(partial, json_path, energy_json, figures)


def merge(parts: list[Path], json_path: Path | None = None, energy_json: Path | None = None,
          figures: Figures | None = None) -> dict[str, Any]:
    """Shards' partial results (``verify --shard I/N --json PART``) -> the result one run over
    all of them gives, written like :func:`verify`'s. An output that is one of the shards, a
    malformed shard, or shards of different runs (images, model, export, labels, templates,
    options) are errors, before anything is written."""
    for flag, out in (("--json", json_path), ("--energy-json", energy_json)):
        if out is not None and any(_same_file(out, p) for p in parts):
            raise ConfigError(f"{flag} {out} is one of the shards being merged; write the merged "
                              f"result to another file (the shards are kept as they are)")
    shards = [read_partial(p) for p in parts]
    try:  # deeper than read_partial checks: tallies, divergences
        partial = merge_partials(shards)
        result = summarize(partial)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise DataError(f"the shards {', '.join(map(str, parts))} hold malformed records "
                        f"({type(exc).__name__}: {' '.join(str(exc).split())[:120]}); pass the "
                        f"--json files written by `verify --shard I/N`, unedited") from None
    return _finish(partial, json_path, energy_json, figures, result)


def _same_file(a: Path, b: Path) -> bool:
    """``a`` and ``b`` name one file (the same path, or links to one file)."""
    a, b = Path(a), Path(b)
    return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))


def _finish(partial: dict[str, Any], json_path: Path | None, energy_json: Path | None,
            figures: Figures | None, result: dict[str, Any] | None = None) -> dict[str, Any]:
    result = result if result is not None else summarize(partial)
    if json_path is not None:
        write_json(json_path, result if result["complete"] else partial)
    if energy_json is not None and "energy" in result:
        write_json(energy_json, result["energy"])
    if figures is not None:  # before the bit-exactness check: a divergence is drawn too
        figures(result, partial.get("raster"))
    check_bit_exact(result)
    return result
