"""Figures of a verification (``verify`` / ``energy --plots DIR``): data in, PNG files out.

Each ``*_figure`` function draws one figure from a ``verify`` result (or its energy report, or
the spike raster of its partial result) and returns it, so the values drawn can be read back;
:func:`write_plots` writes those that apply. Rendered with Agg (no display), written atomically.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter

from .fileutil import atomic_write
from .verify.energy import model_rows

log = logging.getLogger(__name__)

#: result key -> legend name, in drawing order
SERIES = {"float": "float model (PyTorch)", "emu": "chip (emulator)", "lava": "chip (Lava)",
          "cpu": "CPU reference"}
RATE_UNIT = "firing rate (spikes per neuron per step)"


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _width(bars: int) -> float:
    """Inches for ``bars`` bars: wide enough to label each."""
    return min(40.0, max(6.0, 0.3 * bars + 2.0))


def _bars(ax, names: list[str], series: dict[str, list[float]]) -> None:
    """Grouped bars: one group per name, one bar per series (its key the legend label)."""
    x = np.arange(len(names))
    width = 0.8 / len(series)
    for k, (label, values) in enumerate(series.items()):
        ax.bar(x + (k - (len(series) - 1) / 2) * width, values, width, label=label)
    ax.set_xticks(x, names, rotation=90, fontsize=7)
    ax.set_xlim(-0.6, len(names) - 0.4)
    if len(series) > 1:
        ax.legend(fontsize=8)


def firing_rate_figure(result: dict[str, Any]) -> Figure:
    """Firing rate per LIF layer: the float model's and every backend's, on their images."""
    rates = result["firing_rates"]
    names = list(next(v for k, v in rates.items() if k != "float"))
    n = {k: result["lava_n"] if k == "lava" else result["n"] for k in rates}
    series = {f"{SERIES[k]}, {n[k]} images": [rates[k][name] for name in names]
              for k in SERIES if k in rates}
    fig = _figure(_width(len(names) * len(series)), 4.5)
    ax = fig.add_subplot()
    _bars(ax, names, series)
    ax.set_title(f"Firing rate per LIF layer, float model vs chip ({result['model']})")
    ax.set_xlabel("LIF layer (chip graph, image encoder)")
    ax.set_ylabel(RATE_UNIT)
    return fig


def synaptic_ops_figure(energy: dict[str, Any]) -> Figure:
    """Synaptic operations per inference of every synapse layer (from recorded spikes)."""
    rows = energy["layers"]
    fig = _figure(_width(len(rows)), 4.5)
    ax = fig.add_subplot()
    _bars(ax, [r["name"] for r in rows], {"SOPs": [r["sops"] for r in rows]})
    ax.set_title(f"Synaptic operations per layer (mean of {energy['n']} images, T = "
                 f"{energy['time_steps']}, {energy['spikes_from']} spikes)")
    ax.set_xlabel("synapse layer (chip graph, image encoder)")
    ax.set_ylabel("synaptic operations per inference (SOPs)")
    return fig


def energy_unit(values_pj: list[float]) -> tuple[str, float]:
    """(unit, pJ per unit) for energies: uJ, or mJ once the largest reaches 1 mJ."""
    return ("mJ", 1e9) if max(values_pj, default=0.0) >= 1e9 else ("uJ", 1e6)


def energy_figure(energy: dict[str, Any]) -> Figure:
    """Energy per inference of every layer: the 45 nm model's (E_AC x SOPs per synapse layer
    of the model, a synapse copied for several readers once, under its own name, as that model
    counts it; spiking attention on chip as one bar, max pools of currents on chip as one) and,
    where the report has it, the Loihi model's (its own layers, every copy:
    the chip executes each), each in its own panel, in uJ (mJ from 1 mJ), with plain tick
    labels (no offset or power-of-ten multiplier on the axis)."""
    model = [{**row, "name": row["copy_of"] or row["name"]}
             for row in model_rows(energy["layers"])]
    if "attention_energy_pj" in energy:  # spiking attention on chip, all its populations
        model.append({"name": "attention on chip", "energy_pj": energy["attention_energy_pj"]})
    if "pool_energy_pj" in energy:  # max pools of currents on chip, all their ReLU levels
        model.append({"name": "max pools on chip", "energy_pj": energy["pool_energy_pj"]})
    panels = [(f"45 nm model (E_AC {energy['energy_model']['e_ac_pj']} pJ per SOP)", model,
               "synapse layer")]
    if "loihi" in energy:
        panels.append(("Loihi model", energy["loihi"]["layers"], "layer"))
    fig = _figure(_width(max(len(rows) for _, rows, _ in panels)), 4.0 * len(panels))
    for k, (title, rows, what) in enumerate(panels):
        ax = fig.add_subplot(len(panels), 1, k + 1)
        pj = [r["energy_pj"] for r in rows]
        unit, per = energy_unit(pj)
        _bars(ax, [r["name"] for r in rows], {"energy": [e / per for e in pj]})
        plain = ScalarFormatter(useOffset=False)
        plain.set_scientific(False)
        ax.yaxis.set_major_formatter(plain)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(f"{what} (chip graph, image encoder)")
        ax.set_ylabel(f"energy per inference ({unit})")
    fig.suptitle(f"Energy per layer (mean of {energy['n']} images)")
    return fig


def raster_matrix(layer: dict[str, Any]) -> np.ndarray:
    """A layer of a spike ``raster`` -> its spikes ``[neurons, T]`` (neurons flattened in
    PyTorch's C x H x W order)."""
    t = layer["shape"][0]
    flat = np.zeros(math.prod(layer["shape"]), np.uint8)
    flat[layer["spikes"]] = 1
    return flat.reshape(t, -1).T


def raster_figure(raster: dict[str, Any]) -> Figure:
    """The spikes of one image in every LIF layer as an event raster: one mark per spike at
    (time step, neuron index). Every mark is one spike, so colour carries no value and there is
    no colour scale."""
    layers = raster["layers"]
    cols = min(6, len(layers))
    rows = math.ceil(len(layers) / cols)
    fig = _figure(2.2 * cols + 1, 2.4 * rows + 1)
    for k, (name, layer) in enumerate(layers.items()):
        ax = fig.add_subplot(rows, cols, k + 1)
        m = raster_matrix(layer)
        neurons, steps = np.nonzero(m)
        ax.scatter(steps, neurons, marker="_", s=400, linewidths=0.4, color="black")
        ax.set_xlim(-0.5, m.shape[1] - 0.5)
        ax.set_ylim(-0.5, m.shape[0] - 0.5)
        ax.set_xticks(range(m.shape[1]))
        ax.tick_params(labelsize=6)
        ax.set_title(f"{name} {tuple(layer['shape'][1:])}: {len(layer['spikes'])} spikes",
                     fontsize=7)
    fig.suptitle(f"Spike raster of one image (dataset index {raster['index']}) on "
                 f"{SERIES[raster['backend']]}: one mark per spike")
    fig.supxlabel("time step")
    fig.supylabel("neuron index (C x H x W, flattened)")
    return fig


def divergence_figure(result: dict[str, Any]) -> Figure | None:
    """Per LIF layer, for every pair of backends whose spikes differ: the share of spike values
    that differ, and on how many images the spikes part first in that layer. None when every
    pair agrees."""
    pairs = {p: d for p, d in result["divergence"].items() if d["spike_mismatches"]}
    if not pairs:
        return None
    names = list(next(iter(pairs.values()))["mismatches_by_layer"])
    fig = _figure(_width(len(names) * len(pairs)), 8.0)
    top, bottom = fig.add_subplot(2, 1, 1), fig.add_subplot(2, 1, 2)
    _bars(top, names, {p: [100 * d["mismatches_by_layer"][n]["fraction"] for n in names]
                       for p, d in pairs.items()})
    top.set_ylabel("spike values differing (%)")
    top.set_title("Spike values that differ, per layer", fontsize=10)
    _bars(bottom, names, {p: [d["first_divergence"].get(n, {}).get("samples", 0)
                              for n in names] for p, d in pairs.items()})
    bottom.set_ylabel("images first diverging here")
    bottom.set_title("Layer where an image's spikes first differ", fontsize=10)
    for ax in (top, bottom):
        ax.set_xlabel("LIF layer (chip graph, image encoder)")
    fig.suptitle("Where the backends' spikes diverge")
    return fig


def save_png(fig: Figure, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


def write_plots(result: dict[str, Any], raster: dict[str, Any] | None, out_dir: Path
                ) -> list[Path]:
    """Write the figures that apply to ``out_dir``: ``firing-rates.png``, ``synaptic-ops.png``
    and ``energy-per-layer.png`` (with an energy report), ``spike-raster.png`` (with a
    ``raster``), ``divergence.png`` (when backends disagree). Returns the files written."""
    energy = result.get("energy")
    figures = {
        "firing-rates": firing_rate_figure(result) if result["firing_rates"] else None,
        "synaptic-ops": synaptic_ops_figure(energy) if energy else None,
        "energy-per-layer": energy_figure(energy) if energy else None,
        "spike-raster": raster_figure(raster) if raster else None,
        "divergence": divergence_figure(result),
    }
    written = []
    for name, fig in figures.items():
        if fig is None:
            log.info("no %s figure: the result has no data for it", name)
            continue
        path = Path(out_dir) / f"{name}.png"
        save_png(fig, path)
        log.info("figure -> %s", path)
        written.append(path)
    return written
