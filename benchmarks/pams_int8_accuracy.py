"""What integer serving costs in PSNR on trained PAMS students (held-out photographs).

Runs `configs/pams/quick.py` (float EDSR x2 teacher -> 8-bit and 4-bit PAMS students; skipped
when `--workdir` already holds them), then scores on its held-out photographs with the paper
protocol (`evals.sr.evaluate_sr`: MATLAB Y channel, shave = scale, uint8 grid):

  * "fake-quant": the student's own evaluation forward;
  * "int8": `quant.serve_int8` of `quant.export_int8` (every body conv on integer levels; conv1
    on the levels of the quantiser applied to the same tensor);
  * "int8 conv1 float": the same with `unquantized_inputs="float"` (equal to fake-quant);
  * "int8 + rest": also body_end and the upsampler convs in int8 (`int8_float_convs`, beyond the
    paper; 8-bit, alphas = max |input| over the training photographs' LR images).

Run: `python benchmarks/pams_int8_accuracy.py [--workdir DIR]` (about 2-9 CPU minutes for the
training, seconds for the scoring).
"""
from __future__ import annotations

import argparse
import os
import tempfile

import jax
import numpy as np

from configs.pams import quick
from jaxcompress import quant
from jaxcompress.data import sources, transforms
from jaxcompress.evals import sr as sr_eval
from jaxcompress.models import edsr
from jaxcompress.train import checkpoint, loop

_REST = "body_end|upsampler"


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--workdir", default=None)
  args = parser.parse_args()
  workdir = args.workdir or tempfile.mkdtemp(prefix="pams_int8_")
  config = quick.get_config()
  if not all(os.path.isdir(os.path.join(workdir, s)) for s in ("8bit", "4bit")):
    loop.run(config, workdir)
  transforms.load_providers()
  table = config.stages.table
  scale = int(table.model.kwargs.scale)
  test = sources.get("sr_offline", "test", scale=scale)
  train = sources.get("sr_offline", "train", scale=scale)
  calibration = [np.asarray(train[i]["lr"], np.float32)[None] for i in range(len(train))]
  for bits in (8, 4):
    params = checkpoint.load_run_state(os.path.join(workdir, f"{bits}bit"))["params"]
    params = jax.device_get(params)
    student = edsr.EDSR(**dict(table.model.kwargs), layers=edsr.pams_layers(bits=bits))
    example = calibration[0]
    exports = {
        "int8": quant.export_int8({"params": params}, student, example),
        "int8 conv1 float": quant.export_int8({"params": params}, student, example,
                                              unquantized_inputs="float"),
    }
    # Calibrate the rest over every training LR image: the largest alpha wins.
    rest = [quant.export_int8({"params": params}, student, c, int8_float_convs=_REST)
            for c in calibration]
    alphas = {k: max(float(e.convs[k].alpha) for e in rest)
              for k, v in rest[0].convs.items() if v.alpha is not None}
    exports["int8 + rest"] = rest[0].replace(convs={
        k: v.replace(alpha=np.float32(alphas[k])) if k in alphas else v
        for k, v in rest[0].convs.items()})
    fq = jax.jit(lambda p, x: student.apply({"params": p}, x))
    serve = jax.jit(quant.serve_int8)
    predictors = {"fake-quant": lambda lr: np.asarray(fq(params, lr))}
    for label, exported in exports.items():
      predictors[label] = lambda lr, e=exported: np.asarray(serve(e, lr))
    result = sr_eval.evaluate_sr(predictors, test, scale, bicubic=False, with_ssim=False)
    base = result["fake-quant/psnr"]
    print(f"{bits}-bit student, {result['num_images']} held-out photos, PSNR-Y: "
          + ", ".join(f"{k} {result[f'{k}/psnr']:.3f} dB ({result[f'{k}/psnr'] - base:+.3f})"
                      for k in predictors), flush=True)
  print(f"workdir {workdir}")


if __name__ == "__main__":
  main()
