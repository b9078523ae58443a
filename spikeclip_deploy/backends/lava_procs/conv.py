r"""A fast fixed-point model of Lava's stock ``Conv`` process: im2col and one BLAS matrix product
per step instead of Lava's one scipy ``convolve2d`` per (input, output) channel pair.

It computes what ``PyConvModelFixed`` (lava-nc 0.10.0) computes, bit for bit: the ``a_out`` sent
at step :math:`t` is the convolution of the input :math:`s` received at step :math:`t-1` (zero
at the first step),

.. math:: a[x, y, o] = \mathrm{wrap}_{24}\Big(\sum_{i, j, c} s[x S_x + i D_x - P_x,\;
          y S_y + j D_y - P_y,\; c + g C_g]\; W[o, k_X - 1 - i, k_Y - 1 - j, c]\Big)

on Lava's ``(X, Y, C)`` layout (stride :math:`S`, dilation :math:`D`, zero padding :math:`P`),
with the kernel ``(C_out, k_X, k_Y, C_g)`` flipped (a true convolution), :math:`g` the group of
output channel :math:`o`, :math:`C_g` the input channels per group; the sum is cast to int32 and
wrapped to 24 signed bits by Lava's own ``clamp_precision``. As in ``PyConvModelFixed``,
``weight_exp`` is not applied, and with ``num_message_bits = 0`` any nonzero input counts as a
spike (graded inputs are used as they are).

One difference, on purpose: ``Conv`` stores ``groups`` in an int8 Var, so Lava's model sees 128
groups as -128 (and returns zeros) and 200 as -56 (and raises); this model reads the process's
``groups`` parameter and convolves with the groups asked for.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from spikeclip_deploy import lava_compat
from spikeclip_deploy.errors import ExportError

lava_compat.install()

from lava.proc.conv.models import PyConvModelFixed  # noqa: E402
from lava.proc.conv.process import Conv  # noqa: E402
from lava.proc.conv.utils import output_shape  # noqa: E402


def exact_float(bound: int) -> type:
    r"""The cheapest float type in which sums of integer terms whose absolute values add up to at
    most ``bound`` are exact.

    Every partial sum of such terms is an integer of magnitude at most ``bound``, whatever the
    order and grouping BLAS uses (blocking, threads, fused multiply-add); a float with a
    :math:`p`-bit significand holds every integer up to :math:`2^p`, so for ``bound``
    :math:`\le 2^p` no product and no addition rounds: float32 (:math:`p = 24`) up to
    :math:`2^{24}`, float64 (:math:`p = 53`) up to :math:`2^{53}`. Spikes times 8-bit weights
    (:math:`|w| \le 256`) over :math:`K` terms stay in float32 up to :math:`K = 2^{16}` and in
    float64 up to :math:`K = 2^{45}`. Beyond :math:`2^{53}` Lava's own float64 sum (scipy)
    rounds in its own order, which no other order reproduces: refused."""
    if bound <= 2**24:
        return np.float32
    if bound <= 2**53:
        return np.float64
    raise ExportError(f"a convolution's sums reach {bound} > 2^53: Lava's float64 convolution "
                      f"rounds them and no other summation reproduces it; use smaller weights "
                      f"or inputs")


class Im2colConv:
    """The convolution of one ``Conv`` process: im2col and a matrix product per group; returns
    what Lava's ``lava.proc.conv.utils.conv`` returns."""

    def __init__(self, weight: np.ndarray, input_shape: tuple[int, int, int],
                 stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int],
                 groups: int, graded: bool) -> None:
        """``weight`` ``(C_out, kX, kY, C_in / groups)`` as Lava's; ``graded``: the input holds
        integers (bounded each step), else spikes (0 or 1)."""
        c_out, kx, ky, c_g = weight.shape
        (x, y, c), (sx, sy), (px, py), (dx, dy) = input_shape, stride, padding, dilation
        self.out_shape = output_shape(input_shape, c_out, (kx, ky), stride, padding, dilation)
        self.graded = graded
        w = np.asarray(weight, dtype=np.int64)
        #: bound of one output's sum per unit of input: terms x largest |weight|
        self.unit_bound = kx * ky * c_g * int(np.max(np.abs(w), initial=0))
        dtype = np.float64 if graded else exact_float(self.unit_bound)
        flipped = w[:, ::-1, ::-1, :].reshape(groups, c_out // groups, kx * ky * c_g)
        self.matrix = flipped.transpose(0, 2, 1).astype(dtype)  # [G, kX kY C_g, C_out / G]
        self.padded = np.zeros((x + 2 * px, y + 2 * py, c), dtype=dtype)
        self.interior = np.s_[px:px + x, py:py + y]
        st = self.padded.strides  # im2col: a strided view [G, X', Y', kX, kY, C_g]
        self.view = dict(shape=(groups, *self.out_shape[:2], kx, ky, c_g),
                         strides=(st[2] * c_g, st[0] * sx, st[1] * sy, st[0] * dx, st[1] * dy,
                                  st[2]))

    def __call__(self, s: np.ndarray) -> np.ndarray:
        """Input ``(X, Y, C)`` -> the int32 convolution ``(X', Y', C_out)`` (not yet wrapped)."""
        if self.graded:  # refuses sums float64 cannot hold exactly
            exact_float(self.unit_bound * int(np.max(np.abs(s), initial=0)))
        self.padded[self.interior] = s
        groups = self.matrix.shape[0]
        cols = as_strided(self.padded, **self.view).reshape(groups, -1, self.matrix.shape[1])
        acc = np.matmul(cols, self.matrix)  # [G, X' Y', C_out / G], exact integers
        # as Lava: a float64 sum beyond int32 casts alike (float32 sums stay within 2^24)
        return acc.transpose(1, 0, 2).reshape(self.out_shape).astype(np.int32)


class PyConvModelFast(PyConvModelFixed):
    """``PyConvModelFixed`` with :class:`Im2colConv` (same Vars, ports, timing and result)."""

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self._conv: Im2colConv | None = None

    def spikes(self) -> np.ndarray:
        """This step's input: booleans, or the graded values with ``num_message_bits > 0``."""
        s = self.s_in.recv()
        return s if self.num_message_bits.item() > 0 else s.astype(bool)

    def run_spk(self) -> None:
        self.a_out.send(self.a_buf)
        s = self.spikes()
        if self._conv is None:  # Vars are set after __init__
            self._conv = Im2colConv(self.weight, s.shape, _ints(self.stride),
                                    _ints(self.padding), _ints(self.dilation),
                                    int(self.proc_params["groups"]),
                                    graded=self.num_message_bits.item() > 0)
        self.a_buf = self.clamp_precision(self._conv(s))


def _ints(pair: np.ndarray) -> tuple[int, int]:
    """A Var's int8 pair as Python ints (int8 arithmetic would overflow in the strides)."""
    return int(pair[0]), int(pair[1])


MODEL_MAP = {Conv: PyConvModelFast}
