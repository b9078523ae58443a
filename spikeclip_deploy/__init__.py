"""spikeclip-deploy: train, quantize, lower to NIR and run SpikeCLIP on Loihi (Lava) and CPU."""
from __future__ import annotations

__version__ = "0.1.0"
