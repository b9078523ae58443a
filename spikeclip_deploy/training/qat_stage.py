"""The quantization-aware stage (:mod:`..lowering.qat`): the chip synapses train through the
Loihi export's quantizer and end on its grid; the host currents are rounded to the chip's input
grids. Checked before training starts, entered before its epochs, settled at the end."""
from __future__ import annotations

import logging
from typing import Any

from ..hardware import load_profile
from ..lowering import qat
from ..nn.spikeclip import SpikeCLIP

log = logging.getLogger(__name__)
#: what a quantization-aware epoch puts the model in after ``train()``: BatchNorm frozen
train_mode = qat.freeze_batchnorm


def check(model: SpikeCLIP, hardware: str) -> None:
    """Fail now, not after hours of earlier stages, if the stage cannot apply."""
    qat.check_supported(model, load_profile(hardware))


def enter(model: SpikeCLIP, hardware: str) -> None:
    """The frozen text encoder quantized as it is, the host currents on their grids, the image
    encoder's synapses through the quantizer."""
    fp = load_profile(hardware).fixed_point
    qat.snap_to_grid(model.text, fp)
    qat.quantize_inputs(model, fp)
    qat.enable(model.image, fp)


def settle(model: SpikeCLIP, hardware: str) -> dict[str, Any]:
    """The float model put on the chip's grid at the end -> the checkpoint's
    ``quantization_aware`` record (the largest distance left from the grid, warned of when a
    layer did not settle)."""
    fp = load_profile(hardware).fixed_point
    for encoder in (model.text, model.image):
        qat.snap_to_grid(encoder, fp)
    qat.quantize_inputs(model, fp)
    record = {"hardware": hardware, "input_grid": True,
              "grid_error": max(qat.grid_error(e, fp) for e in (model.text, model.image))}
    if record["grid_error"] > 1e-3:
        log.warning("a chip layer did not settle on the quantization grid (error %.3g mantissa "
                    "steps); the export will re-round it", record["grid_error"])
    return record
