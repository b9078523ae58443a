"""The ANN twin of a native Spikingformer (neuron relu): its graph, its refusals (export,
quantization-aware training, backends), its training and its float-only verification."""
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spikeclip_deploy import config as config_module
from spikeclip_deploy.config import ModelConfig, get_config, list_configs
from spikeclip_deploy.data import load_dataset
from spikeclip_deploy.deployability import assess
from spikeclip_deploy.errors import ConfigError
from spikeclip_deploy.export import ExportConfig, export_model
from spikeclip_deploy.hardware import load_profile
from spikeclip_deploy.lowering import qat
from spikeclip_deploy.nn.init import random_init
from spikeclip_deploy.nn.lif import MultiStepLIF
from spikeclip_deploy.nn.spikeclip import SpikeCLIP
from spikeclip_deploy.verify.harness import VerifyConfig, run_verification


def test_the_registered_twin_is_spikeclip_native_small_with_relus():
    twin, snn = SpikeCLIP(get_config("scratchclip-native-small")), \
        SpikeCLIP(get_config("spikeclip-native-small"))
    assert twin.cfg.time_steps == 1 and twin.cfg.ann_reason()
    assert twin.image.stack.inputs == snn.image.stack.inputs
    for a, b in zip(twin.image.stack, snn.image.stack):
        assert type(a) is (nn.ReLU if isinstance(b, MultiStepLIF) else type(b))
    shapes = lambda m: {k: v.shape for k, v in m.state_dict().items()}  # noqa: E731
    differ = {k for k in shapes(snn.image) if shapes(twin.image)[k] != shapes(snn.image)[k]}
    assert set(shapes(twin.image)) == set(shapes(snn.image)) and differ == {"readout.tdw.weight"}


def test_twin_forward_by_hand(twin_config):
    """ReLU(stem) -> max-pool -> conv -> ReLU -> max-pool -> conv = x; x += DW(ReLU x);
    x += MLP(ReLU x) (ReLU between); ReLU x -> token mean -> w_0 (T = 1) -> projection."""
    model = random_init(twin_config, 0)
    enc, st = model.image, model.image.stack
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        x = model.normalize(images)
        z = st[2](F.max_pool2d(F.relu(enc.encode(x)), 3, 2, 1))
        x = st[5](F.max_pool2d(F.relu(z), 3, 2, 1))
        x = x + st[7](F.relu(x))
        x = x + st[11](F.relu(st[9](F.relu(x))))
        want = enc.readout.proj(enc.readout.tdw.weight[0] * F.relu(x).mean((2, 3)))
        got = enc(model.normalize(images))
    assert torch.allclose(got, want, atol=1e-5) and want.abs().max() > 1e-3


@pytest.mark.parametrize("change, needle", [
    (dict(time_steps=4), "time_steps 1"),
    (dict(image_arch="conv-chain"), "native-spikingformer"),
    (dict(text_arch="spiking-mlp"), "ann-mlp"),
    (dict(neuron="tanh"), "neuron must be one of lif, relu"),
])
def test_inconsistent_twin_configs_are_refused(twin_config, change, needle):
    with pytest.raises(ConfigError, match=needle):
        ModelConfig.from_dict({**twin_config.to_dict(), **change})


def test_export_and_quantization_aware_training_are_refused_naming_the_fix(twin_ckpt,
                                                                           twin_config, tmp_path):
    for target in ("loihi", "cpu"):
        with pytest.raises(ConfigError, match="is an ANN .*Export its spiking counterpart"):
            export_model(ExportConfig(model=str(twin_ckpt), target=target, out=tmp_path / "x"))
    assert not (tmp_path / "x").exists()
    with pytest.raises(ConfigError, match="train the ANN without --qat-epochs"):
        qat.check_supported(SpikeCLIP(twin_config), load_profile("loihi2"))
    row = assess(twin_config)
    assert row["deployable"] == "no" and "nothing in it spikes" in row["deployable_reason"]


def test_train_distil_and_finetune(twin_config, image_folder, tower, tmp_path, monkeypatch):
    from spikeclip_deploy.checkpoint import load_model
    from spikeclip_deploy.training.recipe import Recipe
    from spikeclip_deploy.training.run import TrainConfig, run_training

    list_configs()
    monkeypatch.setitem(config_module._REGISTRY, twin_config.name, twin_config)
    out = tmp_path / "twin.safetensors"
    recipe = Recipe(text_epochs=1, distill_epochs=1, finetune_epochs=1, batch_size=8,
                    text_batch_size=64, max_steps_per_epoch=2, text_datasets=("cifar10",))
    meta = run_training(TrainConfig(model=twin_config.name, teacher=f"offline-minilm:{tower}",
                                    data=image_folder, out=out, val_fraction=0.25,
                                    recipe=recipe)).meta
    assert [h["stage"] for h in meta["history"]] == ["text", "distill", "finetune"]
    assert 0.0 <= meta["metrics"]["val_zero_shot_top1_student"] <= 1.0
    model, _, _ = load_model(str(out))
    assert model.cfg == twin_config and isinstance(model.image.stack[0], nn.ReLU)
    with pytest.raises(ConfigError, match="without --qat-epochs"):
        run_training(TrainConfig(model=twin_config.name, teacher=f"offline-minilm:{tower}",
                                 data=image_folder, out=tmp_path / "q.safetensors",
                                 recipe=dataclasses.replace(recipe, qat_epochs=1)))


def test_verify_evaluates_the_float_model_only(twin_ckpt, twin_config, image_folder, zero_shot):
    """Accuracy as the PyTorch model's zero-shot scores give it, computed here; no export, no
    backends, no energy."""
    result = run_verification(VerifyConfig(model=str(twin_ckpt), data=image_folder))
    ds = load_dataset(image_folder, 32)
    scores = zero_shot.float_model(twin_ckpt, ds.images.numpy(), list(ds.class_names))
    want = float((scores.argmax(1) == ds.labels.numpy()).mean())
    assert list(result["accuracy"]) == ["float"] and result["n"] == 24
    assert np.isclose(result["accuracy"]["float"], want)
    assert result["export"] is None and result["backends"] == {} and "energy" not in result
    assert ModelConfig.from_dict(result["config"]) == twin_config
    with pytest.raises(ConfigError, match="is an ANN .*give no --backends"):
        run_verification(VerifyConfig(model=str(twin_ckpt), data=image_folder,
                                      backends=("cpu",)))


def test_a_spiking_model_without_backends_is_evaluated_as_a_float_model(micro_ckpt,
                                                                        image_folder):
    result = run_verification(VerifyConfig(model=str(micro_ckpt), data=image_folder,
                                           backends=(), lava_limit=0, limit=8))
    assert list(result["accuracy"]) == ["float"] and result["export"] is None
