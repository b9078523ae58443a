r"""snntorch 0.9.1 reads the exported chip graphs with its stock NIR import, which fixes
dt = 1e-4 s: the export writes tau in seconds (one chip step is dt), so its neurons are the CPU
reference's. snntorch's ``Leaky`` integrates :math:`u \leftarrow \beta u + I` with
:math:`\beta = 1 - dt/\tau` and the threshold divided by :math:`r\,dt/\tau` (so
:math:`u = v\,\tau/(r\,dt)`), spikes when :math:`u` exceeds it and resets to zero in the same step.

Its synapses compute in float32 (its spikes are float32), the CPU reference in float64: on the
fixed-point export every value is a dyadic rational float32 holds, so the spikes are equal by
construction; on a float export they are equal wherever no membrane lies within float32 round-off
of the threshold (this test model). That the recipe of docs/interop.md reproduces the CPU
reference's spikes is tested in tests/interop/; here: the neurons snntorch builds, and what fails
on graphs with fan-in (last test).
"""
import contextlib
import io

import nir
import numpy as np
import pytest
import torch
from snntorch.import_nir import import_from_nir

from spikeclip_deploy.backends.cpu import run_graph
from spikeclip_deploy.lowering.graph import Graph, Layer, to_nir


def snntorch_net(graph: nir.NIRGraph) -> torch.nn.Module:
    with contextlib.redirect_stdout(io.StringIO()):  # snntorch prints its threshold scaling
        return import_from_nir(graph)


def snntorch_spikes(graph: nir.NIRGraph, x: np.ndarray, time_steps: int, lifs: list[str]
                    ) -> list[np.ndarray]:
    """The loop of docs/interop.md: the same input every step; each layer's output is in the
    state's cache. Spikes ``[B, T, *shape]`` of the LIFs ``lifs``."""
    net, state, record = snntorch_net(graph), None, {name: [] for name in lifs}
    with torch.no_grad():
        for _ in range(time_steps):
            _, state = net(torch.as_tensor(x, dtype=torch.float32), state)
            for name in lifs:
                record[name].append(state.cache[name])
    return [torch.stack(record[n], 1).numpy().astype(np.uint8) for n in lifs]


@pytest.mark.parametrize("target", ["loihi", "cpu"])
def test_snntorch_neurons_follow_from_tau_in_seconds(micro_exports, target):
    """tau = 2 steps = 2e-4 s: beta = 1 - 1e-4/2e-4 = 1/2; threshold V_th/(r dt/tau): float
    r = 1, V_th = 1 -> 2; fixed point r = 128, V_th = 64 vth -> the register vth."""
    graph = nir.read(micro_exports[target] / "chip" / "image_encoder.nir")
    net = snntorch_net(graph)
    for name, node in graph.nodes.items():
        if isinstance(node, nir.LIF):
            leaky = getattr(net, name)
            want = node.metadata["loihi"]["vth"] if target == "loihi" else 2.0
            assert torch.all(leaky.beta == 0.5) and float(leaky.threshold) == want, name


def test_snntorch_takes_a_fan_in_input_from_the_previous_step(tmp_path):
    r"""What fails on graphs with fan-in: snntorch 0.9.1 runs a graph with nirtorch's deprecated
    ``GraphExecutor`` in depth-first order from the input, so a LIF with several inputs runs when
    first reached and takes the inputs not yet run in this step from the previous step (none at
    step 0); no error is raised.

    lif0 (input 3: spikes every step) -> a (weight 3) -> lif1 -> b (1.5) -> lif2, and
    lif0 -> c (1.5) -> lif2. The CPU reference: lif2 receives 3 every step, :math:`v = 3/2 > 1`,
    spikes every step. snntorch: at step 0 one input, :math:`v = 1.5/2`, no spike; later steps
    sum this step's input and the other's previous one (both spiking)."""
    one = lambda v: np.full((1,), v, dtype=np.float32)  # noqa: E731
    lif = lambda: nir.LIF(tau=one(2), r=one(1), v_leak=one(0), v_threshold=one(1),  # noqa: E731
                          v_reset=one(0))
    dense = lambda w: nir.Affine(weight=np.full((1, 1), w, np.float32), bias=one(0))  # noqa: E731
    layers = [Layer("lif0", lif(), ("input",), ""), Layer("a", dense(3.0), ("lif0",), ""),
              Layer("lif1", lif(), ("a",), ""), Layer("b", dense(1.5), ("lif1",), ""),
              Layer("c", dense(1.5), ("lif0",), ""), Layer("lif2", lif(), ("b", "c"), "")]
    nir.write(tmp_path / "g.nir", to_nir(Graph("text", tuple(layers), (1,), (1,))))
    graph = nir.read(tmp_path / "g.nir")
    x = np.full((1, 1), 3.0)
    (want,) = run_graph(graph, ["lif2"], torch.from_numpy(x), 3)
    (got,) = snntorch_spikes(graph, x, 3, ["lif2"])
    assert want.ravel().tolist() == [1, 1, 1] and got.ravel().tolist() == [0, 1, 1]
