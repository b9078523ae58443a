"""The verification harness on the micro model: accuracies and agreements recounted from
predictions made here, and Lava's recorded spikes recounted independently."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spikeclip_deploy.backends.cpu import CPUBackend
from spikeclip_deploy.verify import harness
from spikeclip_deploy.verify.harness import VerifyConfig, run_verification


def _expected(preds, labels):
    """Accuracy per target and the agreements of ``run_verification``, as fractions of n."""
    n = len(labels)
    acc = {k: int((p == labels).sum()) / n for k, p in preds.items()}
    agree = {f"{a}_vs_{b}": int((preds[a] == preds[b]).sum()) / n
             for a, b in (("loihi", "float"), ("loihi", "cpu"), ("cpu", "float"))}
    return acc, agree


def test_accuracy_and_agreement_count_each_targets_predictions(micro_ckpt, micro_exports,
                                                               image_folder, zero_shot, monkeypatch):
    """The loihi target is replaced by a backend whose predictions are known (image i -> class
    i mod 3); float and cpu predictions are the PyTorch model's argmax, computed here."""
    class Known(CPUBackend):
        def class_weights(self, labels, templates=()):
            return np.eye(len(labels), 384, dtype=np.float32)

        def encode_images(self, images):
            _, spikes = super().encode_images(images)
            return np.eye(384, dtype=np.float32)[np.arange(len(images)) % 3], spikes

    real = harness.get_backend
    monkeypatch.setattr(harness, "get_backend", lambda t: Known if t == "loihi" else real(t))
    cfg = VerifyConfig(model=str(micro_ckpt), data=image_folder, limit=9, val_fraction=0.5,
                       exports=tuple(micro_exports.items()))
    r = run_verification(cfg)
    images, labels, names = harness.validation_images(cfg, 32)
    torch_pred = zero_shot.float_model(micro_ckpt, images, names).argmax(1)
    preds = {"float": torch_pred, "cpu": torch_pred, "loihi": np.arange(9) % 3}
    acc, agree = _expected(preds, labels)
    assert r["n"] == 9 and r["labels"] == names == ["airplane", "automobile", "bird"]
    assert agree["loihi_vs_float"] < 1 and len(set(acc.values())) > 1  # the counts can tell
    assert r["accuracy"] == acc and r["agreement"] == agree


@pytest.mark.lava
def test_verify_counts_and_energy_recount(micro_ckpt, micro_exports, image_folder, zero_shot):
    """Real backends: accuracies and agreements from predictions made here (PyTorch model, and
    the fixed-point model of the loihi export); Lava's spike counts recounted by convolution."""
    cfg = VerifyConfig(model=str(micro_ckpt), data=image_folder, limit=6, val_fraction=0.5)
    r = run_verification(cfg)
    images, labels, names = harness.validation_images(cfg, 32)
    torch_pred = zero_shot.float_model(micro_ckpt, images, names).argmax(1)
    preds = {"float": torch_pred, "cpu": torch_pred,
             "loihi": zero_shot.loihi(micro_exports["loihi"], images, names).argmax(1)}
    acc, agree = _expected(preds, labels)
    assert r["n"] == 6 and r["accuracy"] == acc and r["agreement"] == agree
    spikes, layers = r["loihi_spikes"], r["energy"]["layers"]
    with CPUBackend(micro_exports["loihi"]) as cpu:  # host part only: the chip input current
        current = cpu.host.image_current(images)
        graph = cpu.graphs["image"]
    for got, want in zip(spikes, zero_shot.fixed_point(graph, current, 4)):
        assert np.array_equal(got, want)
    # micro: lif0 [6,4,4,32,32] -conv0 (3x3, s2)-> lif1 [.., 8,16,16] -conv1 (1x1)-> lif2
    convs = [(4, 8, 3, 2, 1), (8, 16, 1, 1, 0)]
    assert [layer["name"] for layer in layers] == ["conv0", "conv1"]
    for (c_in, c_out, k, stride, pad), s, layer in zip(convs, spikes, layers):
        x = torch.from_numpy(s.reshape(-1, *s.shape[2:])).double()
        events = F.conv2d(x, torch.ones(c_out, c_in, k, k, dtype=torch.float64), stride=stride,
                          padding=pad).sum().item() / r["n"]
        assert layer["sops"] == pytest.approx(events, rel=0, abs=1e-9)
        assert layer["firing_rate"] == pytest.approx(float(np.mean(s)))
    assert all(0 < s.mean() < 1 for s in spikes)
    assert r["firing_rates"]["loihi"] == {f"lif{j}": pytest.approx(float(s.mean()))
                                          for j, s in enumerate(spikes)}


def test_batches_give_the_result_of_one_run(micro_ckpt, image_folder):
    """Streaming the images in batches of 1 changes nothing against one batch of all 5."""
    cfg = VerifyConfig(model=str(micro_ckpt), data=image_folder, limit=5, val_fraction=0.5,
                       targets=("cpu",))
    one = run_verification(cfg)
    streamed = run_verification(VerifyConfig(**{**cfg.__dict__, "batch_size": 1}))
    assert one["n"] == streamed["n"] == 5
    for key in ("accuracy", "agreement", "firing_rates"):
        assert one[key] == streamed[key], key
