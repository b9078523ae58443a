"""spikeclip-deploy: train, quantize, lower to NIR and run SpikeCLIP on Loihi (Lava) and CPU."""
from __future__ import annotations

__version__ = "0.1.0"

import os as _os

# torch's OpenMP threads sleep when idle instead of spinning against other work (read once, when
# the runtime loads: before torch is imported); numba's threads are its own pool (workqueue), not
# a second OpenMP runtime whose start changes torch's
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
_os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")

from . import lava_compat as _lava_compat

_lava_compat.install()  # before any lava import, wherever the user imports lava from
