"""The formats the build side writes and the run side reads, and nothing else: the contract
between them.

- :mod:`.manifest`: ``manifest.json``, sealed and schema-checked, with the chip record
- :mod:`.chip`: the hardware figures an export was lowered for (fixed point, cores), as the
  manifest carries them
- :mod:`.nirgraph`: NIR chip graphs (host ops, relays, depths, layer order)
- :mod:`.current_pool`: max pools of currents on chip as levels of graded ReLU neurons
- :mod:`.fixed_point`: Loihi's bias register, both directions
- :mod:`.resources`: static resource counts of a chip graph

The build side (``lowering/``, and ``export/``: NIR, ONNX host ops, netx) writes these; the
run side (``backends/``, ``verify/``, ``mapping.py``) reads them; neither imports the other, and
this package imports neither.
"""
