"""Teacher loaders on models built in the test (no hub access)."""
import pytest
import torch

from spikeclip_deploy.errors import CheckpointError, ConfigError
from spikeclip_deploy.teachers import load_teacher


def tiny_clip_dir(path):
    """A randomly initialised CLIP (transformers layout) with a byte-level CLIP tokenizer."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=[]).save_pretrained(str(path))
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=77,
                         bos_token_id=len(vocab) - 2, eos_token_id=len(vocab) - 1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, image_size=32, patch_size=8),
        projection_dim=16)
    torch.manual_seed(0)
    CLIPModel(cfg).save_pretrained(str(path))
    return path


def test_hf_clip_teacher_from_local_directory(tmp_path):
    teacher = load_teacher(f"clip:{tiny_clip_dir(tmp_path)}")
    assert teacher.embed_dim == 16
    img = teacher.encode_images(torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8))
    txt = teacher.encode_texts(["a photo of a cat.", "a photo of a dog."])
    assert img.shape == (2, 16) and txt.shape == (2, 16)
    assert torch.allclose(img.norm(dim=-1), torch.ones(2), atol=1e-5)
    texts = ["a photo of a cat.", "a photo of a dog.", "a ship."]  # batched = all at once
    assert torch.allclose(teacher.text_features(texts, batch_size=2), teacher.encode_texts(texts),
                          atol=1e-5)
    w = teacher.class_weights(["cat", "dog", "ship"], ("a photo of a {}.", "a {}."))
    assert w.shape == (3, 16)
    assert teacher.token_embeddings().shape[1] == 32


def test_clip_teacher_needs_a_directory(tmp_path):
    with pytest.raises(ConfigError, match="not a transformers CLIP directory"):
        load_teacher(f"clip:{tmp_path}")
    with pytest.raises(ConfigError, match="unknown teacher"):
        load_teacher("dino")


def test_offline_teacher_text_tower_is_real():
    """all-MiniLM-L6-v2 from its package: related sentences are closer than unrelated ones."""
    from spikeclip_deploy.teachers.offline import MiniLMText

    text = MiniLMText()
    f = text(["a photo of a cat.", "a picture of a kitten.", "a cargo ship at sea."])
    assert f.shape == (3, 384)
    assert float(f[0] @ f[1]) > float(f[0] @ f[2]) + 0.2


def test_a_clip_directory_with_pickled_weights_runs_no_code(tmp_path, hostile):
    """The CLIP's weights as transformers' pytorch_model.bin, replaced by a hostile pickle:
    transformers unpickles with weights_only=True: a one-line CheckpointError naming the object,
    and nothing runs."""
    path = tiny_clip_dir(tmp_path / "clip")
    (path / "model.safetensors").unlink()  # the pickle layout instead
    hostile.torch_file(path / "pytorch_model.bin", lambda evil: {"text_projection.weight": evil})
    with pytest.raises(CheckpointError, match=f"refused to load {path}: it names the Python "
                                              f"object exec") as err:
        load_teacher(f"clip:{path}")
    assert "\n" not in str(err.value)
    assert not hostile.ran()
