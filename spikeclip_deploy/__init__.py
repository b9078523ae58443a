"""spikeclip-deploy: train, quantize, lower to NIR and run SpikeCLIP on Loihi (Lava) and CPU."""
from __future__ import annotations

__version__ = "0.1.0"

from . import lava_compat as _lava_compat

_lava_compat.install()  # before any lava import, wherever the user imports lava from
