"""Golden-file test: the fixed-point chip graphs of the micro export (seeded) must not drift.

Regenerate after an intended change with ``UPDATE_GOLDEN=1 make test`` and review the diff.
"""
import hashlib
import json
import os
from pathlib import Path

import nir
import numpy as np

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "micro_loihi_chip.json"


def digest(a) -> str:
    return hashlib.sha256(np.ascontiguousarray(np.asarray(a, dtype=np.float64)).tobytes()).hexdigest()[:16]


def summarize(export: Path) -> dict:
    out = {}
    for side in ("image", "text"):
        g = nir.read(export / "chip" / f"{side}_encoder.nir")
        nodes = {}
        for name, node in g.nodes.items():
            row = {"type": type(node).__name__}
            if isinstance(node, (nir.Conv2d, nir.Affine)):
                row.update(weight=digest(node.weight), bias=digest(node.bias),
                           shape=list(np.asarray(node.weight).shape))
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
