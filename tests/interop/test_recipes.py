"""The recipes of docs/interop.md, executed as the page writes them (its code blocks marked
``<!-- recipe: NAME -->``, in order, in one namespace), on the micro model's exports: each must
reproduce spikeclip-deploy's own spikes and scores, exactly where the design is exact."""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import nir
import numpy as np
import pytest

from spikeclip_deploy.backends.cpu import CPUBackend
from spikeclip_deploy.backends.emulator import EmulatorBackend
from spikeclip_deploy.zeroshot import tokenize

DOC = Path(__file__).resolve().parents[2] / "docs" / "interop.md"
RECIPE = re.compile(r"<!-- recipe: ([\w-]+) -->\n```python\n(.*?)```", re.S)
TEXTS = ["a photo of a cat", "a blurry photo of a ship", "a dog"]


def recipes() -> dict[str, str]:
    """Recipe name -> its code, as the page has it."""
    return dict(RECIPE.findall(DOC.read_text()))


def execute(names: list[str], ns: dict) -> dict:
    """Execute the named recipes in order in the namespace ``ns``; returns it."""
    code = recipes()
    with contextlib.redirect_stdout(io.StringIO()):  # snntorch prints its threshold scaling
        for name in names:
            exec(compile(code[name], f"{DOC}:{name}", "exec"), ns)
    return ns


def run_recipes(names: list[str], export: Path, images: np.ndarray) -> dict:
    """The named recipes with the page's two set-up variables."""
    return execute(names, {"np": np, "export": str(export), "images": images})


def test_the_page_holds_every_recipe_the_tests_run():
    assert list(recipes()) == ["host", "chip-input", "nirtorch", "labels", "snntorch", "netx"]


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (3, 3, 32, 32), dtype=np.uint8)


@pytest.mark.parametrize("target", ["loihi", "cpu"])
def test_nirtorch_and_onnxruntime_reproduce_the_cpu_reference(micro_exports, images, target):
    export = micro_exports[target]
    ns = run_recipes(["host", "chip-input", "nirtorch"], export, images)
    with CPUBackend(export) as cpu:
        current = cpu.host.image_current(images)
        want = dict(zip(cpu.lif_names("image"), cpu.run_chip("image", current)))
        features = cpu.host.readout("image", want[cpu.lif_names("image")[-1]])
        labels = cpu.host.labels
        scores = features @ cpu.host.label_features.T
    np.testing.assert_array_equal(ns["current"], current)
    assert list(ns["spikes"]) == list(want)
    for name, w in want.items():
        assert 0.02 < w.mean() < 0.9, (name, w.mean())  # the layer carries information
        np.testing.assert_array_equal(ns["spikes"][name], w, err_msg=name)
    np.testing.assert_array_equal(ns["scores"], scores)
    assert ns["predicted"] == [labels[k] for k in scores.argmax(1)]


@pytest.mark.parametrize("target", ["loihi", "cpu"])
def test_own_labels_reproduce_the_cpu_references_class_weights(micro_exports, images, target):
    export = micro_exports[target]
    ns = run_recipes(["host", "chip-input", "nirtorch", "labels"], export, images)
    with CPUBackend(export) as cpu:
        weights = cpu.class_weights(ns["labels"], tuple(ns["templates"]))
        features, _ = cpu.encode_images(images)
    np.testing.assert_allclose(ns["class_weights"], weights, rtol=0, atol=1e-6)
    assert not np.allclose(weights[0], weights[1], atol=1e-3)  # the labels are told apart
    assert ns["my_predicted"] == [ns["labels"][k] for k in (features @ weights.T).argmax(1)]


@pytest.mark.parametrize("target", ["loihi", "cpu"])
def test_snntorch_reproduces_the_cpu_reference(micro_exports, images, target):
    """Exact on both, on the image and the text encoder: the fixed-point export's values are
    exact in float32, and no membrane of the micro model's float export lies within float32
    round-off of its threshold."""
    export = micro_exports[target]
    ns = run_recipes(["host", "chip-input", "snntorch"], export, images)
    with CPUBackend(export) as cpu:
        want = {"image": dict(zip(cpu.lif_names("image"),
                                  cpu.run_chip("image", cpu.host.image_current(images))))}
        current = cpu.host.text_current(tokenize(cpu.host.tokenizer, TEXTS,
                                                 cpu.manifest["host"]["context_length"]))
        want["text"] = dict(zip(cpu.lif_names("text"), cpu.run_chip("text", current)))
    got = {"image": ns["snn_spikes"]}
    # the same recipe on the text encoder's graph and its input
    text_graph = nir.read(export / "chip" / "text_encoder.nir")
    ns.update(graph=text_graph, x=ns["chip_input"](text_graph, current))
    got["text"] = execute(["snntorch"], ns)["snn_spikes"]
    for side, spikes in want.items():
        assert list(got[side]) == list(spikes)
        for name, w in spikes.items():
            assert 0.02 < w.mean() < 0.9, (side, name, w.mean())
            np.testing.assert_array_equal(got[side][name], w, err_msg=f"{side} {name}")


@pytest.fixture(scope="module")
def netx_export(micro_ckpt, tmp_path_factory) -> Path:
    from spikeclip_deploy.export import ExportConfig, export_model

    out = tmp_path_factory.mktemp("interop-netx") / "netx"
    return export_model(ExportConfig(model=str(micro_ckpt), target="loihi", out=out,
                                     format="netx"))[0]


@pytest.mark.lava
def test_netx_reproduces_the_emulator(netx_export, images):
    ns = run_recipes(["host", "chip-input", "netx"], netx_export, images)
    emu = EmulatorBackend(netx_export)
    spikes = dict(zip(emu.lif_names("image"),
                      emu.run_chip("image", emu.host.image_current(images))))
    want = spikes[ns["segment"]["output"]][0]
    assert want.any() and not want.all(), "no information in the spikes"
    np.testing.assert_array_equal(ns["netx_spikes"], want)


@pytest.fixture(scope="module")
def tiny_exports(tmp_path_factory) -> dict[str, Path]:
    """The shipped spikeclip-tiny-cifar10, exported for both targets."""
    from spikeclip_deploy.export import ExportConfig, export_model

    base = tmp_path_factory.mktemp("interop-tiny")
    return {t: export_model(ExportConfig(model="spikeclip-tiny-cifar10", target=t,
                                         out=base / t))[0] for t in ("loihi", "cpu")}


@pytest.mark.slow
@pytest.mark.parametrize("target", ["loihi", "cpu"])
def test_the_shipped_tiny_model_through_nirtorch_and_snntorch(tiny_exports, target):
    """nirtorch: exact on both exports. snntorch: exact on the fixed-point export; on the float
    export (float32 against the CPU reference's float64) within the page's stated tolerance:
    lif0 exact, at most 5 % of any layer's spikes differ."""
    export = tiny_exports[target]
    images = np.random.default_rng(1).integers(0, 255, (4, 3, 32, 32), dtype=np.uint8)
    ns = run_recipes(["host", "chip-input", "nirtorch", "snntorch"], export, images)
    with CPUBackend(export) as cpu:
        want = dict(zip(cpu.lif_names("image"),
                        cpu.run_chip("image", cpu.host.image_current(images))))
    for name, w in want.items():
        assert 0.005 < w.mean() < 0.9, (name, w.mean())
        np.testing.assert_array_equal(ns["spikes"][name], w, err_msg=name)
        differ = int((ns["snn_spikes"][name] != w).sum())
        if target == "loihi" or name == "lif0":
            assert differ == 0, (name, differ)
        else:
            assert differ <= 0.05 * w.sum(), (name, differ, int(w.sum()))
