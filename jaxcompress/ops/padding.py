"""Convolution padding specs as explicit per-dimension (low, high) pads.

Every convolution and pooling layer of the library accepts the padding conventions of
`flax.linen.Conv` and PyTorch: a string ("SAME", "SAME_LOWER", "VALID", any case), an int (the
same zero padding on both sides of every spatial dimension, PyTorch's `Conv2d(padding=p)`), a
sequence of ints (one per dimension) or a sequence of (low, high) pairs (`lax`'s explicit form).
Layers that pad by hand (binary convolutions pad after binarising their input, the CPU
convolution kernels pad before an im2col) need the explicit pads; `explicit_pads` is the one
conversion they share.

SAME follows `lax.conv_general_dilated`: the output has ceil(in / stride) positions and the
window is the dilated kernel, (k - 1) * d + 1 taps wide (`lax.padtype_to_pads`); an odd total
goes to the high side (SAME) or the low side (SAME_LOWER).

Example:
  >>> explicit_pads("SAME", (32, 32), (3, 3), (2, 2), (1, 1))
  ((0, 1), (0, 1))
  >>> explicit_pads(1, (32, 32), (3, 3), (1, 1), (1, 1))
  ((1, 1), (1, 1))
"""
from __future__ import annotations

from typing import Sequence

from jax import lax

Padding = str | int | Sequence[int] | Sequence[tuple[int, int]]

_STRINGS = ("SAME", "SAME_LOWER", "VALID")


def explicit_pads(padding: Padding, in_spatial: Sequence[int], kernel_spatial: Sequence[int],
                  strides: Sequence[int], dilation: Sequence[int] | None = None
                  ) -> tuple[tuple[int, int], ...]:
  """Resolves a padding spec to one `(low, high)` pair of Python ints per spatial dimension.

  Args:
    padding: "SAME", "SAME_LOWER" or "VALID" (any case); an int (both sides of every dimension);
      a sequence of ints (both sides, per dimension); or a sequence of (low, high) pairs
      (negative values crop, as `lax.conv_general_dilated` allows).
    in_spatial: input spatial shape (H, W, ...).
    kernel_spatial: kernel (or pooling window) spatial shape, before dilation.
    strides: window strides, one per spatial dimension.
    dilation: kernel dilation, one per spatial dimension (None: 1 everywhere); only SAME and
      SAME_LOWER depend on it.

  Returns:
    A tuple with one `(low, high)` pair per spatial dimension.

  Raises:
    ValueError: an unknown padding string, or a sequence whose length is not the number of
      spatial dimensions.
  """
  nd = len(in_spatial)
  if isinstance(padding, str):
    mode = padding.upper()
    if mode not in _STRINGS:
      raise ValueError(f"Unknown padding {padding!r}: use one of {_STRINGS}, an int, "
                       "per-dimension ints or (low, high) pairs.")
    dilation = (1,) * nd if dilation is None else dilation
    window = [(int(k) - 1) * int(d) + 1 for k, d in zip(kernel_spatial, dilation)]
    pads = lax.padtype_to_pads([int(n) for n in in_spatial], window,
                               [int(s) for s in strides], mode)
    return tuple((int(lo), int(hi)) for lo, hi in pads)
  if isinstance(padding, int):
    return ((int(padding), int(padding)),) * nd
  pads = list(padding)
  if len(pads) != nd:
    raise ValueError(f"Padding {padding!r} has {len(pads)} entries for {nd} spatial dimensions; "
                     "give one int or (low, high) pair per dimension.")
  return tuple((int(p), int(p)) if isinstance(p, int) else (int(p[0]), int(p[1])) for p in pads)
