"""Click parameter types shared by every command."""
from __future__ import annotations

import math

import click


class FiniteFloatRange(click.FloatRange):
    """:class:`click.FloatRange` that also refuses NaN and the infinities (``nan``, ``inf``,
    ``-inf``, from the command line or a ``--config`` file). click's own range lets NaN through
    every bound, since every comparison with NaN is false."""

    name = "finite float range"

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number; pass a number such as 0.5", param, ctx)
        return super().convert(number, param, ctx)
