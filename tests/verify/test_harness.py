"""The verification harness on the micro model: Lava's recorded spikes recounted independently."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spikeclip_deploy.verify.harness import VerifyConfig, run_verification


@pytest.mark.lava
def test_energy_counts_equal_an_independent_recount(micro_ckpt, image_folder):
    r = run_verification(VerifyConfig(model=str(micro_ckpt), data=image_folder, limit=3,
                                      val_fraction=0.5))
    assert r["n"] == 3 and set(r["accuracy"]) == {"float", "cpu", "loihi"}
    spikes, layers = r["loihi_spikes"], r["energy"]["layers"]
    # micro: lif0 [3,4,4,32,32] -conv0 (3x3, s2)-> lif1 [.., 8,16,16] -conv1 (1x1)-> lif2
    convs = [(4, 8, 3, 2, 1), (8, 16, 1, 1, 0)]
    assert [layer["name"] for layer in layers] == ["conv0", "conv1"]
    for (c_in, c_out, k, stride, pad), s, layer in zip(convs, spikes, layers):
        x = torch.from_numpy(s.reshape(-1, *s.shape[2:])).double()
        events = F.conv2d(x, torch.ones(c_out, c_in, k, k, dtype=torch.float64), stride=stride,
                          padding=pad).sum().item() / r["n"]
        assert layer["sops"] == pytest.approx(events, rel=0, abs=1e-9)
        assert layer["firing_rate"] == pytest.approx(float(np.mean(s)))
    assert all(s.mean() > 0 for s in spikes[:2])


def test_batches_give_the_result_of_one_run(micro_ckpt, image_folder):
    """Streaming the images in batches of 1 changes nothing against one batch of all 5."""
    cfg = VerifyConfig(model=str(micro_ckpt), data=image_folder, limit=5, val_fraction=0.5,
                       targets=("cpu",))
    one = run_verification(cfg)
    streamed = run_verification(VerifyConfig(**{**cfg.__dict__, "batch_size": 1}))
    assert one["n"] == streamed["n"] == 5
    for key in ("accuracy", "agreement", "firing_rates"):
        assert one[key] == streamed[key], key
