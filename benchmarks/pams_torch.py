"""The PyTorch peer of int8 EDSR serving: float vs PyTorch's quantized CPU backend.

EDSR-baseline x4 (16 residual blocks, 64 features, res_scale 1, pixel-shuffle upsampler) written
in PyTorch as the official EDSR-PyTorch model, served in float (channels-last) and as PyTorch's
eager-mode static int8 model (`torch.ao.quantization`, "x86" engine: fbgemm / oneDNN int8
kernels; every conv int8 with per-tensor activation observers calibrated on the input, residual
adds through `FloatFunctional`, quantize / dequantize stubs around the network): the integer
serving a PyTorch user gets with the same network. Random weights; ratio = float time / int8
time, interleaved repetitions, min and median. Run: `python benchmarks/pams_torch.py [--size 256]
[--reps 5]` (part of `benchmarks/pams.py --torch`).
"""
from __future__ import annotations

import argparse
import statistics
import time


def build(torch, tnn, n_feats: int = 64, n_blocks: int = 16, scale: int = 4):
  """EDSR-baseline as EDSR-PyTorch's `edsr.py` (MeanShift folded into a subtraction)."""

  class Block(tnn.Module):

    def __init__(self):
      super().__init__()
      self.conv1 = tnn.Conv2d(n_feats, n_feats, 3, padding=1)
      self.relu = tnn.ReLU()
      self.conv2 = tnn.Conv2d(n_feats, n_feats, 3, padding=1)
      self.add = torch.ao.nn.quantized.FloatFunctional()

    def forward(self, x):
      return self.add.add(self.conv2(self.relu(self.conv1(x))), x)

  class EDSR(tnn.Module):

    def __init__(self):
      super().__init__()
      self.quant = torch.ao.quantization.QuantStub()
      self.dequant = torch.ao.quantization.DeQuantStub()
      self.head = tnn.Conv2d(3, n_feats, 3, padding=1)
      self.body = tnn.Sequential(*[Block() for _ in range(n_blocks)])
      self.body_end = tnn.Conv2d(n_feats, n_feats, 3, padding=1)
      self.skip = torch.ao.nn.quantized.FloatFunctional()
      ups = []
      for _ in range(scale // 2):
        ups += [tnn.Conv2d(n_feats, 4 * n_feats, 3, padding=1), tnn.PixelShuffle(2)]
      self.upsampler = tnn.Sequential(*ups)
      self.tail = tnn.Conv2d(n_feats, 3, 3, padding=1)

    def forward(self, x):
      x = self.head(self.quant(x))
      x = self.skip.add(self.body_end(self.body(x)), x)
      return self.dequant(self.tail(self.upsampler(x)))

  return EDSR().eval()


def run(size: int = 256, reps: int = 5) -> float:
  """Prints float vs int8 PyTorch serving at LR `size`; returns float / int8 (min over min)."""
  import torch  # pylint: disable=import-outside-toplevel
  from torch import nn as tnn  # pylint: disable=import-outside-toplevel

  torch.manual_seed(0)
  x = torch.rand(1, 3, size, size) * 255 - 127.5
  fmodel = build(torch, tnn)
  qmodel = build(torch, tnn)
  qmodel.load_state_dict(fmodel.state_dict())
  torch.backends.quantized.engine = "x86"
  qmodel.qconfig = torch.ao.quantization.get_default_qconfig("x86")
  prepared = torch.ao.quantization.prepare(qmodel)
  with torch.no_grad():
    prepared(x)  # calibration
  int8 = torch.ao.quantization.convert(prepared)
  fmodel = fmodel.to(memory_format=torch.channels_last)
  xf = x.contiguous(memory_format=torch.channels_last)
  with torch.no_grad():
    diff = (fmodel(xf) - int8(x)).abs().max().item()
    fns = {"float": lambda: fmodel(xf), "int8": lambda: int8(x)}
    for fn in fns.values():
      fn()
    times = {k: [] for k in fns}
    for _ in range(reps):
      for k, fn in fns.items():
        t = time.perf_counter()
        fn()
        times[k].append(time.perf_counter() - t)
  ratio = min(times["float"]) / min(times["int8"])
  print(f"PyTorch {torch.__version__} EDSR-baseline x4 {size}x{size}, {torch.get_num_threads()} "
        f"threads: float min {min(times['float']) * 1e3:.1f} med "
        f"{statistics.median(times['float']) * 1e3:.1f} ms | int8 (x86 engine) min "
        f"{min(times['int8']) * 1e3:.1f} med {statistics.median(times['int8']) * 1e3:.1f} ms | "
        f"float/int8 min {ratio:.2f}x; max |float - int8| {diff:.2f}", flush=True)
  return ratio


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--size", type=int, default=256)
  parser.add_argument("--reps", type=int, default=5)
  args = parser.parse_args()
  run(args.size, args.reps)


if __name__ == "__main__":
  main()
