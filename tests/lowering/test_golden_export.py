"""Golden-file tests: the fixed-point chip graphs of the micro export (seeded) must not drift,
and their integers are the ones derived here by hand from the checkpoint.

Regenerate after an intended change with ``UPDATE_GOLDEN=1 make test`` and review the diff.
"""
import hashlib
import json
import math
import os
from pathlib import Path

import nir
import numpy as np

from spikeclip_deploy.checkpoint import load_model
from spikeclip_deploy.hardware import load_profile
from spikeclip_deploy.lowering.quantize import quantize_layers

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "micro_loihi_chip.json"

def quantize_chain(chain, profile):
    """``quantize_layers`` on a chain ``[(name, node)]``, each layer reading the one before."""
    names = ["input"] + [name for name, _ in chain]
    return quantize_layers([(n, node, (prev,)) for (n, node), prev in zip(chain, names)], profile)



def digest(a) -> str:
    return hashlib.sha256(np.ascontiguousarray(np.asarray(a, dtype=np.float64)).tobytes()).hexdigest()[:16]


def ints(a) -> list[int]:
    a = np.asarray(a, dtype=np.float64)
    assert np.array_equal(a, np.round(a)), "fixed-point values must be integers"
    return [int(v) for v in a.ravel()]


def summarize(export: Path) -> dict:
    out = {}
    for side in ("image", "text"):
        g = nir.read(export / "chip" / f"{side}_encoder.nir")
        nodes = {}
        for name, node in g.nodes.items():
            row = {"type": type(node).__name__}
            if isinstance(node, (nir.Conv2d, nir.Affine)):
                w = np.asarray(node.weight)
                row.update(weight=digest(w), bias=digest(node.bias), shape=list(w.shape),
                           weight_row0=ints(w.reshape(w.shape[0], -1)[0]),
                           bias_x64=ints(np.asarray(node.bias) * 64))
            if isinstance(node, nir.LIF):
                row.update(shape=list(np.asarray(node.tau).shape),
                           v_threshold=float(np.unique(node.v_threshold)[0]))
            if "loihi" in node.metadata:
                row["loihi"] = {k: int(v) for k, v in node.metadata["loihi"].items()}
            nodes[name] = row
        out[side] = {"nodes": nodes, "edges": sorted(map(list, g.edges)),
                     "input_quantization": {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in
                                            g.metadata["input_quantization"].items()}}
    return out


def test_micro_loihi_export_matches_golden(micro_exports):
    got = summarize(micro_exports["loihi"])
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    assert json.loads(json.dumps(got)) == json.loads(GOLDEN.read_text())


def test_golden_integers_follow_from_the_checkpoint_by_hand(micro_ckpt):
    """Each chip synapse of the checkpoint, BatchNorm folded here in numpy (tau = 2, V_th = 1):
    vth = floor(254 tau / |W|max), S = vth, weights round_even(S W / tau), bias
    round(64 S b / tau) on the smallest exponent whose mantissa fits 13 bits, du = 4095,
    dv = 4096 / tau; the first LIF
    takes the input on vth 1024 with bias exponent 6 (input scale 64 * 1024 / 2 / 64 = 512)."""
    golden = json.loads(GOLDEN.read_text())
    sd = {k: v.double().numpy() for k, v in load_model(str(micro_ckpt))[0].state_dict().items()}
    synapses = {("image", "conv0", "lif1"): "image.stack.1", ("image", "conv1", "lif2"): "image.stack.3",
                ("text", "dense0", "lif1"): "text.stack.1"}
    for (side, syn, lif), key in synapses.items():
        if side == "image":
            gain = sd[f"{key}.1.weight"] / np.sqrt(sd[f"{key}.1.running_var"] + 1e-5)
            w = sd[f"{key}.0.weight"] * gain[:, None, None, None]
            b = sd[f"{key}.1.bias"] - sd[f"{key}.1.running_mean"] * gain
        else:
            w, b = sd[f"{key}.weight"], sd[f"{key}.bias"]
        vth = math.floor(254 * 2 / np.abs(w).max())
        raw = np.round(64 * vth * b / 2)
        exp = next(e for e in range(8) if np.abs(raw).max() / 2**e <= 4095)
        nodes = golden[side]["nodes"]
        assert nodes[lif]["loihi"] == {"du": 4095, "dv": 2048, "vth": vth, "bias_exp": exp}, (side, lif)
        assert nodes[lif]["v_threshold"] == 64 * vth
        row0 = 2 * np.round(w.reshape(len(w), -1)[0] * vth / 2 / 2)
        assert nodes[syn]["weight_row0"] == row0.astype(int).tolist(), (side, syn)
        assert max(map(abs, nodes[syn]["weight_row0"])) <= 254
        assert nodes[syn]["bias_x64"] == (np.round(raw / 2**exp) * 2**exp).astype(int).tolist()
    for side in ("image", "text"):
        assert golden[side]["nodes"]["lif0"]["loihi"] == {"du": 4095, "dv": 2048, "vth": 1024,
                                                          "bias_exp": 6}
        assert golden[side]["input_quantization"] == {"input_scale": 512.0, "bias_exp": 6,
                                                      "bias_mant_range": [-4096, 4095],
                                                      "activation_shift": 6}


def test_quantized_layer_by_hand():
    """LIF -> Affine -> LIF (tau 2, V_th 1), quantized for loihi2, against values worked out on
    paper: |W|max / tau = 0.25, so vth = floor(254 / 0.25) = 1016 = S and W S / tau = 508 W =
    [[254, -50.8, 132.08], [127, 0, -254]] -> even mantissas [[254, -50, 132], [128, 0, -254]]
    (127 / 2 = 63.5 rounds half to even: 64). Bias 2^6 S b / tau = 32512 b = [48768, -1625.6]
    -> [48768, -1626]; 48768 needs exponent 4 for 13 bits: mantissas round([3048, -101.625]) =
    [3048, -102], i.e. NIR biases [3048, -102] * 16 / 64 = [762, -25.5]."""
    def lif(n):
        f = lambda v: np.full((n,), v, dtype=np.float32)  # noqa: E731
        return nir.LIF(tau=f(2), r=f(1), v_leak=f(0), v_threshold=f(1), v_reset=f(0))

    chain = [("lif0", lif(3)),
             ("dense0", nir.Affine(weight=np.array([[0.5, -0.1, 0.26], [0.25, 0.0, -0.5]]),
                                   bias=np.array([1.5, -0.05]))),
             ("lif1", lif(2))]
    (_, l0), (_, dense), (_, l1) = quantize_chain(chain, load_profile("loihi2"))[0]
    assert dense.weight.tolist() == [[254, -50, 132], [128, 0, -254]]
    assert dense.bias.tolist() == [762.0, -25.5]
    assert dense.metadata["activation_worst_case"] == 386  # 254 + 132
    assert l1.metadata["loihi"] == {"du": 4095, "dv": 2048, "vth": 1016, "bias_exp": 4}
    assert l1.metadata["scale"] == 1016
    assert np.unique(l1.v_threshold).tolist() == [65024] and np.unique(l1.r).tolist() == [128]
    assert l0.metadata["loihi"] == {"du": 4095, "dv": 2048, "vth": 1024, "bias_exp": 6}
    assert np.unique(l0.v_threshold).tolist() == [65536]

