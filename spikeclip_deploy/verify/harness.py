"""``verify`` and ``energy``: the float model, the CPU reference and Lava on the same images."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..backends import get_backend
from ..data import load_dataset, stratified_split
from ..errors import DataError, ExportError
from ..export import ExportConfig, export_model, model_source
from ..fileutil import atomic_write, owned_tempdir
from ..hardware import load_profile
from ..progress import encode_in_batches
from ..prompts import CIFAR_TEMPLATES
from ..robustness import with_distractors, with_synonyms
from ..zeroshot import class_weights, student_text_encoder, warn_indistinct_labels
from .energy import energy_report

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VerifyConfig:
    model: str
    data: Path
    limit: int = 64
    download: bool = False  # let torchvision fetch a torchvision:NAME:ROOT dataset
    targets: tuple[str, ...] = ("cpu", "loihi")
    val_fraction: float = 0.1
    seed: int = 0
    templates: tuple[str, ...] = CIFAR_TEMPLATES
    energy_model: str = "energy-45nm"
    exports: tuple[tuple[str, Path], ...] = ()  # (target, existing export dir) to use as is
    noisy_factor: int = 1  # robustness: labels x factor with distractors
    synonym_fraction: float = 0.0  # robustness: this fraction of labels replaced by synonyms
    batch_size: int = 32  # images per backend run (bounds memory; one Lava run per batch)
    init: str = "checkpoint"  # or "random": model is a registered config, seeded by init_seed
    init_seed: int = 0


def validation_images(cfg: VerifyConfig, image_size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The first ``limit`` images of the stratified validation split (shuffled with the seed)."""
    ds = load_dataset(cfg.data, image_size, download=cfg.download)
    if cfg.limit < 1:
        raise DataError(f"--limit must be at least 1 (got {cfg.limit})")
    _, val = stratified_split(ds.labels, cfg.val_fraction, cfg.seed)
    val = val[torch.randperm(len(val), generator=torch.Generator().manual_seed(cfg.seed))][:cfg.limit]
    return ds.images[val].numpy(), ds.labels[val].numpy(), list(ds.class_names)


def _predict(feats: np.ndarray, class_w: np.ndarray) -> np.ndarray:
    return (feats @ class_w.T).argmax(-1)


def _float_encode(model) -> Callable[[np.ndarray], tuple[np.ndarray, list[np.ndarray]]]:
    def encode(images: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        with torch.no_grad():
            return model.encode_image(torch.from_numpy(images)).numpy(), []
    return encode


def run_verification(cfg: VerifyConfig) -> dict[str, Any]:
    """Zero-shot accuracy of float / CPU reference / Lava, agreement and firing rates, and the
    energy report from the Lava run's recorded spikes."""
    model, tokenizer, info = model_source(cfg.model, cfg.init, cfg.init_seed)
    energy_model = load_profile(cfg.energy_model, "energy") if "loihi" in cfg.targets else None
    images, labels, class_names = validation_images(cfg, model.cfg.image_size)
    query = with_distractors(with_synonyms(class_names, cfg.synonym_fraction), cfg.noisy_factor)
    preds: dict[str, np.ndarray] = {}
    rates: dict[str, dict[str, float]] = {}
    result: dict[str, Any] = {"model": info["name"], "weights": info["weights"],
                              "n": int(len(labels)), "labels": query,
                              "protocol": {"noisy_factor": cfg.noisy_factor,
                                           "synonym_fraction": cfg.synonym_fraction},
                              "data": str(cfg.data), "split": {"val_fraction": cfg.val_fraction,
                                                               "seed": cfg.seed}}
    warn_indistinct_labels(tokenizer, query)
    float_w = class_weights(student_text_encoder(model, tokenizer), query, cfg.templates).numpy()
    feats, _ = encode_in_batches(_float_encode(model), images, cfg.batch_size, "float model")
    preds["float"] = _predict(feats, float_w)
    with owned_tempdir(None, "spikeclip-verify-") as workdir:
        given = dict(cfg.exports)
        for target in cfg.targets:
            export_dir = given.get(target) or export_model(
                ExportConfig(model=cfg.model, target=target, out=workdir / target, init=cfg.init,
                             seed=cfg.init_seed))[0]
            with get_backend(target)(export_dir) as backend:
                result.setdefault("backends", {})[target] = {
                    "export": str(export_dir), "export_target": backend.manifest["target"],
                    "runs": backend.description}
                _check_made_from(backend.manifest["model"], info, export_dir)
                class_w = backend.class_weights(query, cfg.templates)
                feats, spikes = encode_in_batches(backend.encode_images, images, cfg.batch_size,
                                            f"{target} backend")
                preds[target] = _predict(feats, class_w)
                names = backend.lif_names("image")
                rates[target] = {n: float(s.mean()) for n, s in zip(names, spikes)}
                if target == "loihi":
                    host = backend.manifest["host"]
                    result["energy"] = energy_report(backend.layers["image"], spikes,
                                                     host["image_stem_macs"],
                                                     host["image_readout_macs"], energy_model)
                    result["loihi_spikes"] = spikes
    result["accuracy"] = {k: float((p == labels).mean()) for k, p in preds.items()}
    result["agreement"] = {f"{a}_vs_{b}": float((preds[a] == preds[b]).mean())
                           for a, b in (("loihi", "float"), ("loihi", "cpu"), ("cpu", "float"),
                                        ("loihi-emu", "float"), ("loihi-emu", "cpu"))
                           if a in preds and b in preds}
    result["firing_rates"] = rates
    result["checkpoint_metrics"] = info["metrics"]
    return result


def _check_made_from(made: dict, info: dict, export_dir: Path) -> None:
    """The export must hold the model verify compares it against."""
    keys = ("weights", "checkpoint_sha256") if info["weights"] == "checkpoint" else \
        ("weights", "name", "seed")
    if any(made.get(k) != info[k] for k in keys):
        what = (f"checkpoint {info['name']}" if info["weights"] == "checkpoint" else
                f"the random initialisation of '{info['name']}' with seed {info['seed']}")
        source = (f"a random initialisation of '{made.get('name')}' (seed {made.get('seed')})"
                  if made.get("weights") == "random-init" else f"checkpoint {made.get('name')}")
        raise ExportError(f"export {export_dir} holds {source}, not {what}; pass the matching "
                          f"--model (with --init random --seed N for a random initialisation) "
                          f"or re-export")


def write_json(path: Path, data: dict) -> None:
    clean = {k: v for k, v in data.items() if k != "loihi_spikes"}
    atomic_write(Path(path), lambda tmp: tmp.write_text(json.dumps(clean, indent=1) + "\n"))
