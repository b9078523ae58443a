"""The open_clip teacher on a tiny randomly initialised open_clip model saved in the test."""
import json

import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from spikeclip_deploy.errors import CheckpointError, ConfigError
from spikeclip_deploy.teachers import load_teacher
from spikeclip_deploy.teachers.open_clip_teacher import CONFIG_NAME, WEIGHT_NAMES

TEXTS = ["a photo of a cat.", "A bad photo of the Airplane!", "itap of a   truck, 3 x"]
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def model_cfg(width: int = 32, layers: int = 1) -> dict:
    return {"embed_dim": 16,
            "vision_cfg": {"image_size": 32, "patch_size": 8, "width": width, "layers": layers,
                           "head_width": 16},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": width, "heads": 2,
                         "layers": layers}}


def tiny_open_clip_dir(path, cfg: dict | None = None, weights: str = WEIGHT_NAMES[0]):
    """Save a random open_clip CLIP in the hub layout -> (dir, the model as built here)."""
    from safetensors.torch import save_file

    cfg = cfg or model_cfg()
    torch.manual_seed(0)
    model = open_clip.CLIP(**cfg).eval()
    with torch.no_grad():
        model.logit_scale.fill_(2.0)
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG_NAME).write_text(json.dumps(
        {"model_cfg": cfg, "preprocess_cfg": {"mean": MEAN, "std": STD}}))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if weights.endswith(".safetensors"):
        save_file(state, str(path / weights))
    else:
        torch.save(state, path / weights)
    return path, model


def test_layout_names_are_open_clips():
    from open_clip import constants

    assert CONFIG_NAME == constants.HF_CONFIG_NAME
    assert WEIGHT_NAMES == (constants.HF_SAFE_WEIGHTS_NAME, constants.HF_WEIGHTS_NAME)


def test_open_clip_teacher_loads_the_weights(tmp_path):
    path, ref = tiny_open_clip_dir(tmp_path / "oc")
    teacher = load_teacher(f"open_clip:{path}")
    assert teacher.embed_dim == 16
    assert teacher.logit_scale == pytest.approx(float(torch.exp(torch.tensor(2.0))))
    assert teacher.describe()["weights"] == WEIGHT_NAMES[0]
    assert teacher.name == f"open_clip:{path.resolve()}"

    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    img = teacher.encode_images(images)
    txt = teacher.encode_texts(TEXTS)
    assert img.shape == (2, 16) and txt.shape == (3, 16)
    assert torch.allclose(img.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.allclose(txt.norm(dim=-1), torch.ones(3), atol=1e-5)
    with torch.no_grad():  # open_clip's own forward on the model built above
        pixels = (images.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) \
            / torch.tensor(STD).view(1, 3, 1, 1)
        want_img = ref.encode_image(pixels, normalize=True)
        want_txt = ref.encode_text(open_clip.tokenize(TEXTS), normalize=True)
    assert torch.allclose(img, want_img, atol=1e-5)
    assert torch.allclose(txt, want_txt, atol=1e-5)

    assert teacher.token_embeddings().shape == (49408, 32)
    assert torch.equal(teacher.token_embeddings(), ref.token_embedding.weight)
    w = teacher.class_weights(["cat", "dog", "ship"], ("a photo of a {}.", "a {}."))
    assert w.shape == (3, 16)
    assert torch.allclose(w.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_larger_image_size_is_resized(tmp_path):
    cfg = model_cfg()
    cfg["vision_cfg"]["image_size"] = 48
    teacher = load_teacher(f"open_clip:{tiny_open_clip_dir(tmp_path / 'oc', cfg)[0]}")
    assert teacher.image_size == (48, 48)
    assert teacher.encode_images(torch.zeros(1, 3, 32, 32, dtype=torch.uint8)).shape == (1, 16)


def test_student_tokenizer_matches_open_clips_and_survives_save(tmp_path):
    """The transformers tokenizer gives the ids of open_clip's SimpleTokenizer, and is the one
    ``train`` saves beside the checkpoint and export/verify reload."""
    from spikeclip_deploy.checkpoint import load_tokenizer
    from spikeclip_deploy.zeroshot import tokenize

    path, _ = tiny_open_clip_dir(tmp_path / "oc", weights=WEIGHT_NAMES[1])  # the .bin variant
    teacher = load_teacher(f"open_clip:{path}")
    want = open_clip.tokenize(TEXTS)
    ids = teacher.tokenizer()(TEXTS)["input_ids"]
    for row, seq in zip(want, ids):
        assert row[:len(seq)].tolist() == seq and int((row != 0).sum()) == len(seq)

    teacher.tokenizer().save_pretrained(str(tmp_path / "student.tokenizer"))
    reloaded = load_tokenizer(tmp_path / "student.safetensors")
    tokens = tokenize(reloaded, TEXTS, 16)
    assert tokens.shape == (3, 16)
    assert tokens[0, :8].tolist() == want[0, :8].tolist()  # "a photo of a cat." + start/end
    assert len(reloaded) == teacher.token_embeddings().shape[0]


def _write_cfg(path, cfg):
    (path / CONFIG_NAME).write_text(json.dumps(cfg))


def test_open_clip_teacher_bad_directories(tmp_path):
    with pytest.raises(ConfigError, match="needs a directory"):
        load_teacher("open_clip:")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_teacher(f"open_clip:{tmp_path / 'nowhere'}")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=f"{CONFIG_NAME} is missing"):
        load_teacher(f"open_clip:{empty}")
    _write_cfg(empty, model_cfg())  # a bare model config, not the hub layout
    with pytest.raises(CheckpointError, match="wrap it as"):
        load_teacher(f"open_clip:{empty}")
    (empty / CONFIG_NAME).write_text("{not json")
    with pytest.raises(CheckpointError, match="not readable JSON"):
        load_teacher(f"open_clip:{empty}")
    _write_cfg(empty, {"model_cfg": {"embed_dim": 16}})
    with pytest.raises(CheckpointError, match="lacks"):
        load_teacher(f"open_clip:{empty}")
    _write_cfg(empty, {"model_cfg": model_cfg()})
    with pytest.raises(CheckpointError, match="no weights in .*open_clip_model.safetensors"):
        load_teacher(f"open_clip:{empty}")


def test_open_clip_teacher_config_weight_mismatch(tmp_path):
    path, _ = tiny_open_clip_dir(tmp_path / "oc")
    weights = path / WEIGHT_NAMES[0]
    _write_cfg(path, {"model_cfg": model_cfg(width=64)})  # wider than the saved weights
    with pytest.raises(CheckpointError, match="does not match .*wrong shapes"):
        load_teacher(f"open_clip:{path}")
    _write_cfg(path, {"model_cfg": model_cfg(layers=2)})  # a layer the weights do not have
    with pytest.raises(CheckpointError, match=f"{weights.name} does not match .*Missing key"):
        load_teacher(f"open_clip:{path}")
    bad = model_cfg()
    bad["vision_cfg"]["no_such_option"] = 1
    _write_cfg(path, {"model_cfg": bad})
    with pytest.raises(CheckpointError, match="cannot build a model"):
        load_teacher(f"open_clip:{path}")
    _write_cfg(path, {"model_cfg": model_cfg()})
    weights.write_bytes(b"\x00" * 64)  # truncated / foreign file
    with pytest.raises(CheckpointError, match="not a readable state dict"):
        load_teacher(f"open_clip:{path}")


def test_text_cfg_hf_tokenizer_is_used_as_is(tmp_path):
    """With ``text_cfg.hf_tokenizer_name`` open_clip reads the tokenizer files in DIR; the teacher
    hands that very transformers tokenizer to the student, and a missing one is a clear error."""
    from open_clip.tokenizer import HFTokenizer, SimpleTokenizer

    from spikeclip_deploy.tokenizers import clip_tokenizer_from_simple

    cfg = model_cfg()
    cfg["text_cfg"]["hf_tokenizer_name"] = "a-local-tokenizer"
    path, ref = tiny_open_clip_dir(tmp_path / "oc", cfg)
    with pytest.raises(CheckpointError, match="cannot load the tokenizer .*save_pretrained"):
        load_teacher(f"open_clip:{path}")
    clip_tokenizer_from_simple(SimpleTokenizer()).save_pretrained(str(path))
    teacher = load_teacher(f"open_clip:{path}")
    assert isinstance(teacher._oc_tokenizer, HFTokenizer)
    assert teacher.tokenizer() is teacher._oc_tokenizer.tokenizer
    with torch.no_grad():
        want = ref.encode_text(HFTokenizer(str(path))(TEXTS), normalize=True)
    assert torch.allclose(teacher.encode_texts(TEXTS), want, atol=1e-5)


def test_pickled_weights_that_run_code_are_refused(tmp_path, hostile):
    """``open_clip_pytorch_model.bin`` replaced by a hostile pickle: a one-line
    CheckpointError, and nothing in it runs."""
    path, _ = tiny_open_clip_dir(tmp_path / "oc", weights=WEIGHT_NAMES[1])
    hostile.torch_file(path / WEIGHT_NAMES[1], lambda evil: {"logit_scale": evil})
    with pytest.raises(CheckpointError, match="is not a readable state dict") as err:
        load_teacher(f"open_clip:{path}")
    assert "\n" not in str(err.value)
    assert not hostile.ran()
