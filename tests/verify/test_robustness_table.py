"""The robustness table on the micro model and a tiny teacher tower: every protocol's accuracy
recounted here from scores computed without the library (the float model, the chip's fixed-point
arithmetic, the teacher's own encoders) for labels written out here; the baseline equal to
verify's on the same images, and the teacher's to the trainer's zero-shot accuracy."""
import shutil

import numpy as np
import pytest
import torch

from spikeclip_deploy import zeroshot
from spikeclip_deploy.checkpoint import load_model, save_model
from spikeclip_deploy.data import load_dataset
from spikeclip_deploy.errors import ExportError
from spikeclip_deploy.export import scratch_export
from spikeclip_deploy.prompts import CIFAR100_CLASSES, CIFAR_TEMPLATES
from spikeclip_deploy.teachers import load_teacher
from spikeclip_deploy.training.common import zero_shot_accuracy
from spikeclip_deploy.verify.harness import VerifyConfig, run_verification
from spikeclip_deploy.verify import robustness_table as rt
from spikeclip_deploy.verify.robustness_table import RobustnessConfig, protocols, robustness_table
from spikeclip_deploy.verify.selection import select
from spikeclip_deploy.verify.stats import wilson_ci95

NAMES = ["airplane", "automobile", "bird"]
SYNONYM = {"airplane": "aircraft", "automobile": "car", "bird": "songbird"}
# ceil(fraction x 3 class names with a synonym) for 20, 40, 60, 80, 100 %
RENAMED = [1, 2, 2, 3, 3]


# STL-10's labels not among the class names (airplane and bird are), in its order
STL10_DISTRACTORS = ["car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]


@pytest.fixture(scope="module")
def measured(micro_ckpt, micro_exports, image_folder, tower, tmp_path_factory):
    """(config, the table with STL-10's labels as distractors (fewer prompts than CIFAR-100's),
    the scores it predicted from, per row and encoder in the table's order), on the micro
    model's existing export."""
    cfg = RobustnessConfig(model=str(micro_ckpt), data=image_folder,
                           teacher=f"offline-minilm:{tower}", split="val", val_fraction=0.5,
                           batch_size=5, distractor_set="stl10", export=micro_exports["loihi"])
    scores = []

    def recording(feats, class_w):
        scores.append(feats @ class_w.T)
        return zeroshot.predict(feats, class_w)

    with pytest.MonkeyPatch.context() as mp:  # the session's cache, not the user's
        mp.setenv("SPIKECLIP_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        mp.setattr(rt, "predict", recording)
        return cfg, robustness_table(cfg), scores


def test_protocols_default_to_cifar100_distractors():
    rows = protocols(NAMES)
    assert rows[1].labels == (*NAMES, *(c.replace("_", " ") for c in CIFAR100_CLASSES))
    assert [r.templates for r in rows] == [CIFAR_TEMPLATES] * 7 + [("a photo of a {}.",)]


def test_rows_are_the_protocols(measured):
    _, table, _ = measured
    rows = table["rows"]
    assert [len(r["labels"]) for r in rows] == [3, 11, 3, 3, 3, 3, 3, 3]
    assert rows[1]["labels"] == NAMES + STL10_DISTRACTORS
    assert [len(r["templates"]) for r in rows] == [18] * 7 + [1]
    assert rows[-1]["templates"] == ["a photo of a {}."] and rows[-1]["labels"] == NAMES
    assert rows[6]["labels"] == ["aircraft", "car", "songbird"]
    for row, k in zip(rows[2:7], RENAMED):
        assert len(row["renamed"]) == k
        assert row["renamed"] == {c: SYNONYM[c] for c in row["renamed"]}
        assert row["labels"] == [row["renamed"].get(c, c) for c in NAMES]


def test_accuracies_recomputed_here(measured, micro_exports, zero_shot, tower):
    cfg, table, predicted_from = measured
    recorded = iter(predicted_from)
    ds = load_dataset(cfg.data, 32)
    sel = select(ds, "val", 0.5, 0, None)
    images, targets = ds.images[sel.index], ds.labels[sel.index].numpy()
    assert table["n"] == len(targets) == 12
    assert table["index"] == sel.index.tolist() and table["targets"] == targets.tolist()
    teacher = load_teacher(f"offline-minilm:{tower}")
    teacher_feats = teacher.encode_images(images).double().numpy()
    for row in table["rows"]:
        labels, templates = row["labels"], tuple(row["templates"])
        scores = {
            "float": zero_shot.float_model(cfg.model, images.numpy(), labels, templates),
            "emu": zero_shot.loihi(micro_exports["loihi"], images.numpy(), labels, templates),
            "teacher": zero_shot._scores(teacher.encode_texts, teacher_feats, labels, templates)}
        for key, s in scores.items():
            np.testing.assert_allclose(next(recorded), s, rtol=0, atol=1e-5,
                                       err_msg=f"{row['protocol']}, {key}")
            assert row["predictions"][key] == s.argmax(1).tolist(), (row["protocol"], key)
            correct = int((s.argmax(1) == targets).sum())
            assert row["correct"][key] == correct
            assert row["accuracy"][key] == correct / 12
            assert row["accuracy_ci95"][key] == wilson_ci95(correct, 12)
    assert next(recorded, None) is None
    # the teacher as the trainer measures it
    base = table["rows"][0]
    assert base["accuracy"]["teacher"] == zero_shot_accuracy(
        teacher.encode_images, teacher.class_weights(NAMES, CIFAR_TEMPLATES), ds.subset(sel.index))


def test_baseline_is_verifys(measured, micro_exports):
    cfg, table, _ = measured
    result = run_verification(VerifyConfig(
        model=cfg.model, data=cfg.data, export=micro_exports["loihi"], split="val",
        val_fraction=0.5, lava_limit=0))
    assert result["n"] == table["n"] and result["data"] == table["data"]
    for key in ("float", "emu"):
        assert table["rows"][0]["accuracy"][key] == result["accuracy"][key]


def test_the_protocols_move_the_accuracy(measured):
    """The micro model and the tower are random, but the protocols change their predictions:
    a check that the recomputation above compares different predictions, not one repeated."""
    _, table, _ = measured
    for key in ("float", "emu", "teacher"):
        assert len({tuple(r["predictions"][key]) for r in table["rows"]}) > 1, key


def test_features_are_encoded_once(micro_ckpt, image_folder, tower, monkeypatch):
    """8 protocols, one pass of every encoder over the images."""
    from spikeclip_deploy.teachers.offline import OfflineMiniLMTeacher

    calls = []
    encode = OfflineMiniLMTeacher.encode_images
    monkeypatch.setattr(OfflineMiniLMTeacher, "encode_images",
                        lambda self, x: calls.append(len(x)) or encode(self, x))
    robustness_table(RobustnessConfig(model=str(micro_ckpt), data=image_folder, limit=7,
                                      batch_size=4, teacher=f"offline-minilm:{tower}",
                                      distractor_set="stl10", make_export=scratch_export))
    assert calls == [4, 3]


def test_an_export_of_another_model_is_refused(micro_ckpt, micro_exports, image_folder, tower,
                                               tmp_path):
    """--export must hold --model: the micro export against another checkpoint (the micro
    model with one weight changed)."""
    model, _, _ = load_model(str(micro_ckpt))
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    other = tmp_path / "other.safetensors"
    save_model(other, model, {"teacher": {"name": "none"}})
    shutil.copytree(micro_ckpt.with_suffix(".tokenizer"), other.with_suffix(".tokenizer"))
    with pytest.raises(ExportError, match="holds checkpoint micro, not checkpoint other"):
        robustness_table(RobustnessConfig(model=str(other), data=image_folder, limit=2,
                                          teacher=f"offline-minilm:{tower}",
                                          export=micro_exports["loihi"]))
