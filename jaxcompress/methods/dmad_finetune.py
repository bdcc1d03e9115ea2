"""DMAD fine-tuning (Li et al., arXiv 2011.08382, Sec. 3.3): the pruned generator learns from the
full model's generator AND discriminator through co-attention distillation.

"dmad_finetune_cyclegan" / "dmad_finetune_pix2pix": the CycleGAN / Pix2Pix training step of the
materialized student (widths and parameters written by the `dmad_materialize` stage, its
discriminators inherited from the search), with the frozen full-size teacher (`dmad.teacher`: the
teacher stage's workdir) adding to the generator loss, as SJLeo/DMAD `models/CycleGAN.py` /
`models/Pix2Pix.py` (`backward_G`, `distill_attention_loss`, `distill_discriminator_loss`):

  L_G += lambda_attention * sum over taps l and directions of
           `distill.co_attention_loss(S[l], stop_gradient(T[l]), D_T_hidden(student fake))`
       + lambda_discriminator * sum over directions of
           `distill.disc_distill_loss(D_T_last(student fake), D_T_last(teacher fake))`

S[l] and T[l]: the student's and teacher's generator features at the role-named taps
`dmad.distill_taps` (CycleGAN: "down2", "res3", "res6", "res9", by role so removed blocks do not
shift them); D_T_hidden: the teacher discriminator's feature after its second conv
(`dmad.disc_tap`, "hidden1") on the student's fake, NOT detached: the gradient runs through the
frozen teacher D into the student (the paper's co-attention); D_T_last: the teacher D's last
hidden layer ("hidden3"). Weights: lambda_attention 100 (CycleGAN) / 10 (Pix2Pix),
lambda_discriminator 1e-4. With both at 0 this is plain training of the pruned student (the
undistilled comparison of the report). Taps whose size differs from the D feature are skipped
with a ConfigError at build time; the official Pix2Pix resizes the D map through an 8-bit image
instead (outside `co_attention_loss`), which is not reproduced.

Config block `config.dmad`: student (the materialize stage's student.json), teacher (the
teacher stage's workdir), lambda_attention, lambda_discriminator [1e-4], distill_taps,
disc_tap ["hidden1"], disc_last_tap ["hidden3"].
"""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcompress import distill
from jaxcompress.errors import ConfigError
from jaxcompress.gan.base import build_network
from jaxcompress.methods.base import Batch
from jaxcompress.methods.cyclegan import CycleGAN
from jaxcompress.methods.pix2pix import Pix2Pix
from jaxcompress.prune import student as student_lib
from jaxcompress.train import checkpoint as checkpoint_lib
from jaxcompress.train.state import TrainState


def load_student(path: str) -> dict[str, Any]:
  """The materialize stage's description: {"widths": {G: ...}, "variables_file", ...}."""
  return student_lib.load_student(path, "dmad.student", "dmad_materialize")


class _Distill:
  """Co-attention and discriminator distillation on a GAN method (module docstring)."""

  DEFAULT_LAMBDA_ATTENTION = 100.0
  DEFAULT_TAPS: tuple[str, ...] = ()
  # (student generator, its input key, teacher discriminator judging its output).
  DIRECTIONS: tuple[tuple[str, str, str], ...] = ()

  def __init__(self, config: ml_collections.ConfigDict, **kwargs: Any):
    d = config.get("dmad", None) or ml_collections.ConfigDict()
    self.dmad = d
    self.student = load_student(d.get("student", ""))
    self.lambda_attention = float(d.get("lambda_attention", self.DEFAULT_LAMBDA_ATTENTION))
    self.lambda_disc = float(d.get("lambda_discriminator", 1e-4))
    self.distill_taps = tuple(d.get("distill_taps", self.DEFAULT_TAPS) or ())
    self.disc_tap = d.get("disc_tap", "hidden1")
    self.disc_last_tap = d.get("disc_last_tap", "hidden3")
    super().__init__(config, **kwargs)
    self.teacher_nets = {g: build_network(config.model.generator) for g in self.GENERATORS}
    self.teacher_nets.update({n: build_network(config.model.discriminator)
                              for n in self.DISCRIMINATORS})
    self.collect_taps = self.distilling

  @property
  def distilling(self) -> bool:
    return self.lambda_attention > 0 or self.lambda_disc > 0

  def build_generator(self, name: str) -> Any:
    widths = self.student["widths"].get(name)
    if widths is None:
      raise ConfigError(f"{self.dmad.student} has no widths for generator {name!r}.")
    return build_network(self.config.model.generator, widths=widths)

  # -- state -----------------------------------------------------------------------------------

  def init_extra(self, rng: jax.Array, example_batch: Batch, params: Any) -> dict[str, Any]:
    """Adds the frozen teacher's variables, zeros here (`load_initial` reads them)."""
    extra = super().init_extra(rng, example_batch, params)
    if not self.distilling:
      return extra
    one = {"A": example_batch["A"][:1], "B": example_batch["B"][:1]}
    shapes = {n: jax.eval_shape(self.teacher_nets[n].init, rng, self.example_input(one, n))
              for n in self.teacher_nets}
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    return {**extra, "teacher": {
        "params": {n: v["params"] for n, v in zeros.items()},
        "model_state": {n: {k: c for k, c in v.items() if k != "params"}
                        for n, v in zeros.items()}}}

  def load_initial(self, state: TrainState) -> TrainState:
    """The materialized student (G from the materialize stage, D from the search) and the
    teacher stage's final variables, read from their files."""
    saved = student_lib.load_student_variables(self.dmad.student, self.student)
    params = _checked(jax.device_get(state.params), saved["params"], "student params")
    model_state = _checked(jax.device_get(state.model_state), saved["model_state"],
                           "student model state")
    extra = state.extra
    if self.distilling:
      run = checkpoint_lib.load_run_state(self.dmad.get("teacher", ""))
      reference = jax.device_get(extra["teacher"])
      teacher = {"params": {n: run["params"][n] for n in self.teacher_nets},
                 "model_state": {n: dict(run.get("model_state", {}) or {}).get(n, {})
                                 for n in self.teacher_nets}}
      extra = {**extra, "teacher": _checked(reference, teacher, "teacher variables")}
    return state.replace(params=params, model_state=model_state, extra=extra)

  # -- loss ------------------------------------------------------------------------------------

  def _teacher(self, name: str, state: TrainState, x: jax.Array) -> tuple[jax.Array, dict]:
    t = state.extra["teacher"]
    variables = {"params": t["params"][name], **t["model_state"].get(name, {})}
    y, sown = self.teacher_nets[name].apply(variables, x, train=False, mutable=["intermediates"])
    from jaxcompress.models import factory  # pylint: disable=g-import-not-at-top
    return y, factory.taps(sown)

  def distill_loss(self, state: TrainState, batch: Batch, aux: dict[str, Any]
                   ) -> dict[str, jax.Array]:
    """{"attention_distill", "discriminator_distill"}: the weighted terms."""
    attention = jnp.zeros((), jnp.float32)
    disc = jnp.zeros((), jnp.float32)
    for g, key, d in self.DIRECTIONS:
      real = batch[key]
      fake = aux["fakes"][self.fake_key(g)]
      teacher_fake, t_taps = self._teacher(g, state, real)
      t_taps = jax.lax.stop_gradient(t_taps)
      _, d_student = self._teacher(d, state, self.disc_input(batch, g, fake))
      if self.lambda_attention > 0:
        s_taps = aux["taps"][g]
        for role in self.distill_taps:
          attention = attention + distill.co_attention_loss(
              s_taps[role], t_taps[role], d_student[self.disc_tap])
      if self.lambda_disc > 0:
        _, d_teacher = self._teacher(d, state, self.disc_input(batch, g, teacher_fake))
        disc = disc + distill.disc_distill_loss(
            d_student[self.disc_last_tap], jax.lax.stop_gradient(d_teacher[self.disc_last_tap]))
    return {"attention_distill": attention * self.lambda_attention,
            "discriminator_distill": disc * self.lambda_disc}

  def generator_loss(self, params: Any, state: TrainState, batch: Batch,
                     rng: jax.Array) -> tuple[jax.Array, dict[str, Any]]:
    loss, aux = super().generator_loss(params, state, batch, rng)
    if not self.distilling:
      return loss, aux
    terms = self.distill_loss(state, batch, aux)
    return loss + sum(terms.values()), {**aux, "metrics": {**aux["metrics"], **terms}}


def _checked(reference: Any, loaded: Any, what: str) -> Any:
  """`loaded` in `reference`'s structure, every path present and every shape equal."""
  try:
    restored = flax.serialization.from_state_dict(reference, loaded)
  except (ValueError, KeyError, TypeError) as e:
    raise ConfigError(f"The saved {what} do not fit the networks built from the config ({e}); "
                      "rerun the stage that wrote them.") from e

  def check(path: Any, ref: Any, new: Any) -> Any:
    if np.shape(ref) != np.shape(new):
      raise ConfigError(f"The saved {what} at {jax.tree_util.keystr(path)} have shape "
                        f"{np.shape(new)}, the networks built from the config need "
                        f"{np.shape(ref)}; rerun the stage that wrote them.")
    return jnp.asarray(new, jnp.asarray(ref).dtype)
  return jax.tree_util.tree_map_with_path(check, reference, restored)


class CycleGANFinetune(_Distill, CycleGAN):
  """Fine-tuning of a pruned CycleGAN ("dmad_finetune_cyclegan"), attention weight 100."""
  DEFAULT_LAMBDA_ATTENTION = 100.0
  DEFAULT_TAPS = ("down2", "res3", "res6", "res9")
  DIRECTIONS = (("G_A", "A", "D_A"), ("G_B", "B", "D_B"))

  def fake_key(self, generator: str) -> str:
    return "fake_B" if generator == "G_A" else "fake_A"

  def disc_input(self, batch: Batch, generator: str, image: jax.Array) -> jax.Array:
    del batch, generator
    return image


class Pix2PixFinetune(_Distill, Pix2Pix):
  """Fine-tuning of a pruned Pix2Pix ("dmad_finetune_pix2pix"), attention weight 10."""
  DEFAULT_LAMBDA_ATTENTION = 10.0
  DIRECTIONS = (("G", "A", "D"),)

  def fake_key(self, generator: str) -> str:
    del generator
    return "fake_B"

  def disc_input(self, batch: Batch, generator: str, image: jax.Array) -> jax.Array:
    del generator
    return jnp.concatenate([batch["A"], image], axis=-1)
