"""A verification's partial result, its merge over shards, and its summary.

A partial result holds what the evaluation saw, per sample (position in the selection, dataset
index, label, every backend's prediction; -1 where a backend did not run that sample) and as
integer tallies (spikes, synaptic operations, spike divergence), plus the run's description,
which every shard of one verification shares, and the ``raster`` of the selection's first image
(in shard 0's). :func:`summarize` computes every figure from it, so shards merged
(:func:`merge_partials`) summarize to the result of one run over them all.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError, VerificationError
from ..fieldtypes import has_type
from ..fileutil import atomic_write
from ..hardware import load_profile
from .divergence import Divergence
from .energy import SpikeTally, energy_report
from .stats import wilson_ci95

PARTIAL_FORMAT = "spikeclip-deploy/verify-partial@1"
#: backend -> its key in results (``accuracy.emu``, ``agreement.emu_vs_lava``, ...)
KEYS = {"loihi-emu": "emu", "loihi": "lava", "cpu": "cpu"}
#: the order of keys in pairs: ``emu_vs_lava``, ``emu_vs_float``, ...
ORDER = ("emu", "lava", "cpu", "float")
#: the spikes an energy report is measured on: the emulator's (every image), else Lava's
ENERGY_SOURCES = ("emu", "lava")
PER_SAMPLE = ("positions", "index", "labels")
#: where a run's files were: paths, which may differ between the shards of one run
LOCATIONS = {"data": ("source",), "export": ("path",)}
#: what :func:`summarize` reads of a partial result's ``run``
RUN_KEYS = ("model", "weights", "checkpoint_sha256", "data", "classes", "labels", "templates",
            "protocol", "export", "backends", "energy", "checkpoint_metrics", "config")


def summarize(partial: dict[str, Any]) -> dict[str, Any]:
    """The report of a (partial or merged) result: ``n``, ``accuracy`` with ``accuracy_ci95``
    (Wilson) and ``per_class_accuracy``, pairwise ``agreement`` (on the samples both ran, counted
    in ``agreement_n``), ``lava_n`` and ``accuracy_on_lava_sample``, ``spike_mismatches`` and
    ``divergence`` per pair of spiking backends, ``firing_rates``, ``energy``, and the model's
    ``config``."""
    run = partial["run"]
    labels = np.asarray(partial["labels"])
    preds = {k: np.asarray(v) for k, v in partial["preds"].items()}
    ran = {k: p >= 0 for k, p in preds.items() if (p >= 0).any()}  # a shard may miss Lava's
    keys = sorted(ran, key=ORDER.index)
    accuracy, ci, per_class = {}, {}, {}
    for k in keys:
        correct = preds[k][ran[k]] == labels[ran[k]]
        accuracy[k] = float(correct.mean())
        ci[k] = wilson_ci95(int(correct.sum()), int(ran[k].sum()))
        per_class[k] = {name: float(correct[labels[ran[k]] == c].mean())
                        for c, name in enumerate(run["classes"]) if (labels[ran[k]] == c).any()}
    agreement, agreement_n = {}, {}
    for a_key, b_key in ((a, b) for i, a in enumerate(keys) for b in keys[i + 1:]):
        both = ran[a_key] & ran[b_key]
        agreement[f"{a_key}_vs_{b_key}"] = float((preds[a_key][both] == preds[b_key][both]).mean())
        agreement_n[f"{a_key}_vs_{b_key}"] = int(both.sum())
    divergence = {pair: Divergence.from_state(state).report()
                  for pair, state in partial["divergence"].items()}
    tallies = {k: SpikeTally.from_state(state) for k, state in partial["tallies"].items()}
    result: dict[str, Any] = {
        "model": run["model"], "weights": run["weights"], "n": int(len(labels)),
        "complete": partial["shard"][1] == 1, "shard": partial["shard"],
        "data": run["data"], "labels": run["labels"], "templates": run["templates"],
        "protocol": run["protocol"], "export": run["export"], "backends": run["backends"],
        "accuracy": accuracy, "accuracy_ci95": ci, "per_class_accuracy": per_class,
        "agreement": agreement, "agreement_n": agreement_n,
        "spike_mismatches": {pair: d["spike_mismatches"] for pair, d in divergence.items()},
        "divergence": divergence,
        "firing_rates": {k: t.firing_rates() for k, t in tallies.items()},
        "checkpoint_metrics": run["checkpoint_metrics"],
        "config": run["config"],
    }
    if "lava" in ran:  # Lava's sample, and every backend's accuracy on it
        result["lava_n"] = int(ran["lava"].sum())
        result["accuracy_on_lava_sample"] = {
            k: float((preds[k][ran["lava"]] == labels[ran["lava"]]).mean()) for k in keys}
    source = next((k for k in ENERGY_SOURCES if k in tallies), None)
    if source:
        e = run["energy"]
        chip = e.get("chip_model")  # absent from the partial results of older versions
        result["energy"] = {"spikes_from": source, **energy_report(
            tallies[source], e["stem_macs"], e["readout_macs"],
            load_profile(e["model"], "energy"),
            load_profile(chip, "chip-energy") if chip else None, e.get("placement"))}
    return result


def identity(run: dict[str, Any]) -> dict[str, Any]:
    """What makes shards one verification's: their run record but the paths in it
    (:data:`LOCATIONS`): the images by content digest, the model and export by theirs, the
    labels, templates and options as they are."""
    return {k: ({**v, **{f: None for f in LOCATIONS.get(k, ())}} if isinstance(v, dict) else v)
            for k, v in run.items()}


def _differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The keys (``data.content_sha256`` one level down) where ``a`` and ``b`` differ."""
    found = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if x == y:
            continue
        if isinstance(x, dict) and isinstance(y, dict):
            found += [f"{key}.{sub}" for sub in sorted(set(x) | set(y)) if x.get(sub) != y.get(sub)]
        else:
            found.append(key)
    return found


def merge_partials(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The shards of one verification -> the partial result of the whole run. Every shard
    ``0 .. N-1`` must be there once, all of the same run (:func:`identity`)."""
    count = parts[0]["shard"][1]
    got = sorted(p["shard"][0] for p in parts)
    if any(p["shard"][1] != count for p in parts) or got != list(range(count)):
        raise ConfigError(f"shards {got} of {sorted({p['shard'][1] for p in parts})}: pass every "
                          f"shard 0 .. N-1 of one run exactly once")
    first = identity(parts[0]["run"])
    for part in parts[1:]:
        differ = _differences(identity(part["run"]), first) + [
            key for key in ("preds", "tallies", "divergence")
            if sorted(part[key]) != sorted(parts[0][key])]
        if differ:
            raise ConfigError(f"the shards come from different runs (they differ in "
                              f"{', '.join(differ)}); merge the shards of one verification")
    def joined(values: list[list]) -> list:  # no order needed: every figure is order-free
        return [v for part in values for v in part]

    tallies = {k: SpikeTally.from_state(parts[0]["tallies"][k]) for k in parts[0]["tallies"]}
    divs = {k: Divergence.from_state(parts[0]["divergence"][k]) for k in parts[0]["divergence"]}
    for part in parts[1:]:
        for k, t in tallies.items():
            t.merge(part["tallies"][k])
        for k, d in divs.items():
            d.merge(part["divergence"][k])
    return {
        "format": PARTIAL_FORMAT, "shard": [0, 1], "run": parts[0]["run"],
        **{key: joined([p[key] for p in parts]) for key in PER_SAMPLE},
        "preds": {k: joined([p["preds"][k] for p in parts]) for k in parts[0]["preds"]},
        "tallies": {k: t.state() for k, t in tallies.items()},
        "divergence": {k: d.state() for k, d in divs.items()},
        **next(({"raster": p["raster"]} for p in parts if "raster" in p), {}),
    }


def check_bit_exact(result: dict[str, Any]) -> None:
    """The emulator reproduces Lava's arithmetic exactly: any spike that differs on the images
    both ran is an error (the result names where, in its ``divergence``)."""
    div = result["divergence"].get("emu_vs_lava")
    if div and div["spike_mismatches"]:
        first = div["first"]
        raise VerificationError(
            f"the emulator's spikes differ from Lava's: {div['spike_mismatches']} spike values "
            f"on {div['samples_diverging']} of {div['samples']} images, first at layer "
            f"{first['layer'][0]}, step {first['step'][0]} (image {first['position'][0]} of the "
            f"selection); the emulator must be bit-exact: report this with the --json output")


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write(Path(path), lambda tmp: tmp.write_text(json.dumps(data, indent=1) + "\n"))


def read_json(path: Path, what: str, fix: str) -> dict[str, Any]:
    """A JSON file of this tool; one that cannot be read is a :class:`DataError` saying
    ``what`` it should be and the ``fix``."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read {path} as {what} ({exc}); {fix}") from None


def read_partial(path: Path) -> dict[str, Any]:
    """A shard's ``--json`` file, its shape checked (:func:`check_partial`)."""
    return check_partial(read_json(path, "a partial verification result", SHARD_FIX), path)


SHARD_FIX = "pass the --json files written by `verify --shard I/N`, unedited"


def check_partial(part: Any, path: Path) -> dict[str, Any]:
    """A partial result's shape: its format, ``shard`` ``[I, N]``, the ``run`` record's keys,
    per-sample lists of integers of one length (labels among the classes), a prediction list
    per backend of that length, tallies and divergences as objects; a DataError naming the
    field otherwise (a ConfigError for a file of another kind)."""
    def bad(field: str, what: str) -> DataError:
        return DataError(f"{path}: field '{field}' {what}; {SHARD_FIX}")

    if not isinstance(part, dict) or part.get("format") != PARTIAL_FORMAT:
        got = part.get("format") if isinstance(part, dict) else type(part).__name__
        raise ConfigError(f"{path} is not a partial verification result (format "
                          f"{str(got)[:60]!r}, expected {PARTIAL_FORMAT}); {SHARD_FIX}")
    shard = part.get("shard")
    if not (has_type(shard, list) and len(shard) == 2 and all(has_type(v, int) for v in shard)
            and 0 <= shard[0] < shard[1]):
        raise bad("shard", "must be [I, N] with 0 <= I < N")
    run = part.get("run")
    if not isinstance(run, dict):
        raise bad("run", "must be an object")
    missing = [k for k in RUN_KEYS if k not in run]
    if missing:
        raise bad(f"run.{missing[0]}", "is missing")
    if not has_type(run["classes"], list) or not all(isinstance(c, str) for c in run["classes"]):
        raise bad("run.classes", "must be a list of class names")
    for key in (*PER_SAMPLE, "preds", "tallies", "divergence"):
        if key not in part:
            raise bad(key, "is missing")
    lists = {key: part[key] for key in PER_SAMPLE}
    if not isinstance(part["preds"], dict) or not part["preds"]:
        raise bad("preds", "must map each backend to its predictions")
    unknown = sorted(set(part["preds"]) - set(ORDER))
    if unknown:
        raise bad(f"preds.{unknown[0][:40]}", f"is not a result key ({', '.join(ORDER)})")
    lists.update({f"preds.{k}": v for k, v in part["preds"].items()})
    n = len(part["labels"]) if isinstance(part["labels"], list) else -1
    for key, values in lists.items():
        if not (isinstance(values, list) and len(values) == n
                and all(has_type(v, int) for v in values)):
            raise bad(key, f"must be a list of {max(n, 0)} integers, as 'labels' is")
    if any(not 0 <= y < len(run["classes"]) for y in part["labels"]):
        raise bad("labels", f"must hold class indices 0 .. {len(run['classes']) - 1}")
    for key in ("tallies", "divergence"):
        if not (isinstance(part[key], dict) and all(isinstance(v, dict)
                                                     for v in part[key].values())):
            raise bad(key, "must be an object of objects")
    return part
