"""Lava's stock sparse synapses from a csr weight matrix: shared by the Lava backend's layers,
relays and attention populations."""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy.sparse import csr_matrix


def sparse_synapse(L: dict, weights: csr_matrix, bits: int, delay: int,
                   weight_exp: int = 0) -> Any:
    """``Sparse`` of ``weights`` (``[readers, sources]``, flat) reading ``bits``-bit graded
    spikes (0: binary), or ``DelaySparse`` holding every synapse's output ``delay`` steps more
    where that is nonzero."""
    if not delay:
        return L["Sparse"](weights=weights, weight_exp=weight_exp, num_message_bits=bits)
    delays = csr_matrix((np.full(weights.nnz, delay), weights.indices, weights.indptr),
                        shape=weights.shape)
    return L["DelaySparse"](weights=weights, delays=delays, weight_exp=weight_exp,
                            num_message_bits=bits)
