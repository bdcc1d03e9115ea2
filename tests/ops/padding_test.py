"""Tests for jaxcompress.ops.padding: explicit pads for every padding convention."""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import numpy as np
import pytest
import torch
from jax import lax

from jaxcompress.ops import padding as padding_lib

NHWC = ("NHWC", "HWIO", "NHWC")


@pytest.mark.parametrize("padding, want", [
    (0, ((0, 0), (0, 0))),
    (2, ((2, 2), (2, 2))),
    ((1, 3), ((1, 1), (3, 3))),
    (((2, 0), (1, 3)), ((2, 0), (1, 3))),
    ([(0, 1), 2], ((0, 1), (2, 2))),
    (((-1, 2), (1, -1)), ((-1, 2), (1, -1))),
])
def test_ints_and_pairs(padding, want):
  got = padding_lib.explicit_pads(padding, (7, 9), (3, 3), (2, 1), (2, 2))
  assert got == want
  assert all(type(v) is int for pair in got for v in pair)  # pylint: disable=unidiomatic-typecheck


@pytest.mark.parametrize("in_sp, kernel, strides, dilation", [
    ((7, 9), (3, 3), (1, 1), (1, 1)),
    ((7, 9), (3, 3), (2, 2), (1, 1)),
    ((8, 6), (2, 4), (1, 3), (1, 1)),
    ((9, 8), (3, 3), (1, 2), (2, 3)),
    ((5, 5), (5, 1), (2, 1), (2, 1)),
])
@pytest.mark.parametrize("mode", ["SAME", "SAME_LOWER", "VALID"])
def test_strings_match_lax_convolution(in_sp, kernel, strides, dilation, mode):
  # The explicit pads reproduce lax's own handling of the string: same output values.
  x = jax.random.normal(jax.random.key(0), (2, *in_sp, 3))
  w = jax.random.normal(jax.random.key(1), (*kernel, 3, 2))
  pads = padding_lib.explicit_pads(mode.lower(), in_sp, kernel, strides, dilation)
  want = lax.conv_general_dilated(x, w, strides, mode, rhs_dilation=dilation,
                                  dimension_numbers=NHWC)
  got = lax.conv_general_dilated(x, w, strides, pads, rhs_dilation=dilation,
                                 dimension_numbers=NHWC)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-6)
  if mode == "VALID":
    assert pads == ((0, 0), (0, 0))
  else:
    # SAME keeps ceil(n / s) positions; the odd pad goes high (SAME) or low (SAME_LOWER).
    assert got.shape[1:3] == tuple(math.ceil(n / s) for n, s in zip(in_sp, strides))
    for lo, hi in pads:
      assert (hi - lo) in ((0, 1) if mode == "SAME" else (0, -1))


@pytest.mark.parametrize("kernel, dilation", [(3, 1), (4, 1), (3, 2), (2, 3)])
def test_same_stride1_matches_torch_same(kernel, dilation):
  # PyTorch's Conv2d(padding="same") (stride 1): total (k - 1) d, the extra pad on the right.
  conv = torch.nn.Conv2d(1, 1, kernel, padding="same", dilation=dilation, bias=False)
  total = dilation * (kernel - 1)
  lo = total // 2
  x = torch.randn(1, 1, 6, 6)
  want = conv(x)
  got = torch.nn.functional.conv2d(
      torch.nn.functional.pad(x, (lo, total - lo, lo, total - lo)), conv.weight,
      dilation=dilation)
  torch.testing.assert_close(got, want)
  assert padding_lib.explicit_pads("SAME", (6, 6), (kernel, kernel), (1, 1),
                                   (dilation, dilation)) == ((lo, total - lo),) * 2


def test_default_dilation_is_one():
  assert (padding_lib.explicit_pads("SAME", (8,), (5,), (1,))
          == padding_lib.explicit_pads("SAME", (8,), (5,), (1,), (1,)) == ((2, 2),))
  assert padding_lib.explicit_pads("SAME", (8,), (5,), (1,), (2,)) == ((4, 4),)


def test_pool_padding_matches_numpy_max_pool():
  # The DARTS pools: 3x3 window, stride 2, padding 1 (padded cells never win a max).
  x = jax.random.normal(jax.random.key(2), (2, 5, 5, 1))
  pads = padding_lib.explicit_pads(1, x.shape[1:-1], (3, 3), (2, 2))
  got = np.asarray(nn.max_pool(x, (3, 3), strides=(2, 2), padding=pads))
  xp = np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
  want = np.stack([np.stack([xp[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3].max(axis=(1, 2))
                             for j in range(3)], axis=1) for i in range(3)], axis=1)
  np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("padding, match", [
    ("CIRCULAR", "Unknown padding"),
    ("same_upper", "Unknown padding"),
    ((1, 2, 3), "3 entries for 2 spatial"),
    ([(1, 1)], "1 entries for 2 spatial"),
])
def test_errors_name_the_problem(padding, match):
  with pytest.raises(ValueError, match=match):
    padding_lib.explicit_pads(padding, (7, 9), (3, 3), (1, 1))
