"""spikeclip-deploy: train, quantize, lower to NIR and run SpikeCLIP on Loihi (Lava) and CPU."""
from __future__ import annotations

__version__ = "0.1.0"

import os as _os

# OpenMP threads (torch's and numba's, two runtimes) sleep when idle instead of spinning against
# the other pool and other work (read once, when the runtime loads: before torch is imported)
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from . import lava_compat as _lava_compat

_lava_compat.install()  # before any lava import, wherever the user imports lava from
