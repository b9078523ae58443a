"""The figures draw the report's values (read back from the Axes) and are written as valid PNGs."""
import matplotlib.image
import numpy as np
import pytest

from spikeclip_deploy.plots import (divergence_figure, energy_figure, firing_rate_figure,
                                    raster_figure, raster_matrix, synaptic_ops_figure,
                                    write_plots)

PNG = b"\x89PNG\r\n\x1a\n"

ENERGY = {"n": 10, "time_steps": 4, "spikes_from": "emu", "energy_model": {"e_ac_pj": 0.9},
          "layers": [{"name": "conv0", "copy_of": None, "sops": 1000.0, "energy_pj": 900.0},
                     {"name": "dense1", "copy_of": None, "sops": 10.0, "energy_pj": 9.0}]}
LOIHI = {"layers": [{"name": "lif0", "energy_pj": 30.0}, {"name": "lif1", "energy_pj": 5.0},
                    {"name": "lif2", "energy_pj": 1.5}]}
AGREE = {"spike_mismatches": 0}
DISAGREE = {"spike_mismatches": 6,
            "mismatches_by_layer": {"lif0": {"spikes": 0, "fraction": 0.0},
                                    "lif1": {"spikes": 6, "fraction": 0.25}},
            "first_divergence": {"lif1": {"samples": 3, "earliest_step": 0, "neurons_mean": 2.0}}}
#: two images' spikes, T = 2, a layer of 2 x 1 x 2 neurons: image 0 spikes at flat indices
#: 0, 3 (step 0: neurons 0 and 3) and 5 (step 1: neuron 1)
RASTER = {"backend": "emu", "position": 0, "index": 17,
          "layers": {"lif0": {"shape": [2, 2, 1, 2], "spikes": [0, 3, 5]},
                     "lif1": {"shape": [2, 3], "spikes": []}}}


def _result(**changes):
    return {"model": "micro", "n": 10, "lava_n": 2,
            "firing_rates": {"emu": {"lif0": 0.25, "lif1": 0.5},
                             "lava": {"lif0": 0.125, "lif1": 0.5},
                             "float": {"lif0": 0.375, "lif1": 0.0625}},
            "divergence": {"emu_vs_lava": AGREE}, "energy": ENERGY, **changes}


def _bars(ax) -> dict[str, list[float]]:
    return {c.get_label(): [p.get_height() for p in c] for c in ax.containers}


def uj(*pj: float) -> list[float]:
    """Energies in pJ -> in uJ, the unit the energy figure draws them in."""
    return [e / 1e6 for e in pj]


def _labelled(fig) -> None:
    """A title, and axis labels on every Axes (or the figure's own)."""
    assert fig.get_suptitle() or all(ax.get_title() for ax in fig.axes)
    for ax in fig.axes:
        assert (ax.get_xlabel() or fig.get_supxlabel()) and (ax.get_ylabel()
                                                             or fig.get_supylabel())


def test_firing_rates_float_first_then_each_chip_backend_with_its_images():
    fig = firing_rate_figure(_result())
    (ax,) = fig.axes
    assert _bars(ax) == {"float model (PyTorch), 10 images": [0.375, 0.0625],
                         "chip (emulator), 10 images": [0.25, 0.5],
                         "chip (Lava), 2 images": [0.125, 0.5]}
    assert [t.get_text() for t in ax.get_xticklabels()] == ["lif0", "lif1"]
    assert "spikes per neuron per step" in ax.get_ylabel()
    _labelled(fig)


def test_synaptic_ops_and_both_energy_models_per_layer():
    (ax,) = synaptic_ops_figure(ENERGY).axes
    assert _bars(ax) == {"SOPs": [1000.0, 10.0]}
    assert "per inference" in ax.get_ylabel()
    (only,) = energy_figure(ENERGY).axes  # no Loihi model in the report: one panel
    assert _bars(only) == {"energy": uj(900.0, 9.0)} and "(uJ)" in only.get_ylabel()
    fig = energy_figure({**ENERGY, "loihi": LOIHI})
    nm45, loihi = fig.axes
    assert _bars(nm45) == {"energy": uj(900.0, 9.0)} and "45 nm" in nm45.get_title()
    assert _bars(loihi) == {"energy": uj(30.0, 5.0, 1.5)} and "Loihi" in loihi.get_title()
    assert [t.get_text() for t in loihi.get_xticklabels()] == ["lif0", "lif1", "lif2"]
    _labelled(fig)
    # a synapse copied for two readers is one layer of the model: once, under its own name
    copied = {**ENERGY, "layers": ENERGY["layers"] + [
        {"name": "conv2_lif5", "copy_of": "conv2", "sops": 4.0, "energy_pj": 3.6},
        {"name": "conv2_lif6", "copy_of": "conv2", "sops": 4.0, "energy_pj": 3.6}]}
    (ax,) = energy_figure(copied).axes
    assert _bars(ax) == {"energy": uj(900.0, 9.0, 3.6)}
    assert [t.get_text() for t in ax.get_xticklabels()] == ["conv0", "dense1", "conv2"]
    # spiking attention on chip: one bar of the 45 nm model's attention energy
    (ax,) = energy_figure({**ENERGY, "attention_energy_pj": 54.7}).axes
    assert _bars(ax) == {"energy": uj(900.0, 9.0, 54.7)}
    assert [t.get_text() for t in ax.get_xticklabels()][-1] == "attention on chip"
    # max pools of currents on chip: one bar of the 45 nm model's ReLU levels' energy
    (ax,) = energy_figure({**ENERGY, "pool_energy_pj": 12.5}).axes
    assert _bars(ax) == {"energy": uj(900.0, 9.0, 12.5)}
    assert [t.get_text() for t in ax.get_xticklabels()][-1] == "max pools on chip"


@pytest.mark.parametrize("pj, unit, shown", [
    ([4.5e6, 2.0e6], "uJ", [4.5, 2.0]),  # in pJ, matplotlib's default axis shows "1e6"
    ([9.0, 4.5], "uJ", [9e-6, 4.5e-6]),  # in uJ, its default shows "1e-6"
    ([2.5e9, 1.0e9], "mJ", [2.5, 1.0]),
])
def test_energy_is_drawn_in_uj_or_mj_with_plain_tick_labels(pj, unit, shown):
    """Energies of real layers are millions of pJ: drawn in uJ (mJ from 1 mJ), and the axis
    shows no offset or power-of-ten multiplier, however small the values."""
    energy = {**ENERGY, "layers": [{"name": f"conv{k}", "copy_of": None, "sops": 1.0,
                                    "energy_pj": e} for k, e in enumerate(pj)]}
    fig = energy_figure(energy)
    fig.canvas.draw()
    (ax,) = fig.axes
    assert np.allclose(_bars(ax)["energy"], shown, rtol=1e-12)
    assert ax.get_ylabel() == f"energy per inference ({unit})"
    assert ax.yaxis.get_offset_text().get_text() == ""
    assert all("e" not in t.get_text() for t in ax.get_yticklabels())


def test_the_raster_is_neurons_by_steps():
    expected = np.array([[1, 0], [0, 1], [0, 0], [1, 0]])
    assert (raster_matrix(RASTER["layers"]["lif0"]) == expected).all()


def test_the_raster_figure_draws_one_mark_per_spike_at_step_and_neuron():
    """lif0's spikes (flat indices 0, 3, 5 of [T = 2, 4 neurons]) are the marks (step 0,
    neuron 0), (0, 3), (1, 1), in one colour and no colour scale; an empty layer has none."""
    fig = raster_figure(RASTER)
    first, second = fig.axes
    (marks,) = first.collections
    assert sorted(map(tuple, marks.get_offsets().tolist())) == [(0, 0), (0, 3), (1, 1)]
    assert len(np.unique(marks.get_facecolors(), axis=0)) <= 1 and marks.get_array() is None
    assert first.get_xlim() == (-0.5, 1.5) and first.get_ylim() == (-0.5, 3.5)
    assert [t for t in first.get_xticks()] == [0, 1]
    (empty,) = second.collections
    assert len(empty.get_offsets()) == 0 and second.get_ylim() == (-0.5, 2.5)
    assert not first.images and not second.images  # no blurred image
    assert "3 spikes" in first.get_title() and "dataset index 17" in fig.get_suptitle()
    _labelled(fig)


def test_divergence_only_when_backends_disagree():
    assert divergence_figure(_result()) is None
    fig = divergence_figure(_result(divergence={"emu_vs_lava": AGREE, "emu_vs_cpu": DISAGREE}))
    share, first = fig.axes
    assert _bars(share) == {"emu_vs_cpu": [0.0, 25.0]} and "(%)" in share.get_ylabel()
    assert _bars(first) == {"emu_vs_cpu": [0, 3]}
    _labelled(fig)


@pytest.mark.parametrize("divergence, raster, written", [
    ({"emu_vs_lava": AGREE}, RASTER,
     ["firing-rates", "synaptic-ops", "energy-per-layer", "spike-raster"]),
    ({"emu_vs_cpu": DISAGREE}, None,
     ["firing-rates", "synaptic-ops", "energy-per-layer", "divergence"]),
])
def test_the_figures_that_apply_are_written_as_png(tmp_path, divergence, raster, written):
    paths = write_plots(_result(divergence=divergence), raster, tmp_path / "figs")
    assert [p.name for p in paths] == [f"{name}.png" for name in written]
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == sorted(p.name for p in paths)
    for path in paths:
        assert path.read_bytes()[:8] == PNG
        pixels = matplotlib.image.imread(path)
        assert pixels.ndim == 3 and min(pixels.shape[:2]) > 100


def test_an_ann_result_has_no_figures(tmp_path):
    """An ANN's verification: no spikes, no energy report."""
    result = {"model": "twin", "n": 4, "firing_rates": {}, "divergence": {}}
    assert write_plots(result, None, tmp_path) == []
    assert list(tmp_path.iterdir()) == []
