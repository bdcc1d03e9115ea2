"""Every DMAD config against the paper (arXiv 2011.08382) and the official SJLeo/DMAD scripts.

The table below is written from `scripts/{cyclegan,mobile_cyclegan,pix2pix,mobile_pix2pix}/
<task>/{train,finetune}.sh` over the `options/options.py` defaults (and the mask models:
`ImagePool(50)`, the "bound"-penalty masks of `get_mask_weight_loss`, the teacher at
`--pretrain_ngf` 64), independently of configs/dmad/_paper.py, so a changed value there fails
here. The headline rows (SJLeo/DMAD README) are written out too.
"""
from __future__ import annotations

import importlib
import json
import os

import jax
import jax.numpy as jnp
import pytest

from configs.dmad import quick_cyclegan, quick_pix2pix
from jaxcompress import methods, prune
from jaxcompress.gan.base import build_network
from jaxcompress.methods.dmad_search import generator_macs
from jaxcompress.models import factory
from jaxcompress.train import loop
from jaxcompress.train import stages as stages_lib

ORDER = ("teacher", "search", "materialize", "distilled", "undistilled", "report")
TRAINING = ("teacher", "search", "distilled", "undistilled")
RESNET, MOBILE = "cyclegan_resnet_generator", "mobile_resnet_generator"
UNET = "jaxcompress.models.pix2pix:UnetGenerator"
# Masks with the bound penalty x upconv_coeff (official module names -> gate paths here):
# model.3 stem, model.7 first downsampling, model.24 / model.28 the two transposed convs.
CYCLEGAN_BOUND_MASKS = {"stem_gate", "down1_gate", "up1_gate", "up2_gate"}
MOBILE_PIX2PIX_BOUND_MASKS = {"stem_gate", "up1_gate", "up2_gate"}   # no model.7

# name: (script folder, generator, search ngf, TFDS task / dataset, direction, batch,
#        --mask_weight_decay, --lambda_update_coeff, --upconv_coeff (None: no --upconv_bound),
#        --AtoB_macs_threshold (G; {generator: G} where the script sets AtoB and BtoA apart),
#        --frozen_threshold (None: unused), attention distill,
#        the bound-penalty masks)
SCRIPTS = {
    "horse2zebra": ("cyclegan/horse2zebra", RESNET, 64, "horse2zebra", "AtoB", 1,
                    1e-3, 1.0, 100.0, 4.0, None, 100.0, CYCLEGAN_BOUND_MASKS),
    "zebra2horse": ("cyclegan/horse2zebra", RESNET, 64, "horse2zebra", "BtoA", 1,
                    1e-3, 1.0, 100.0, 4.0, None, 100.0, CYCLEGAN_BOUND_MASKS),
    "summer2winter": ("cyclegan/summer2winter", RESNET, 64, "summer2winter_yosemite", "AtoB", 1,
                      1e-3, 1.0, 100.0, 4.0, None, 100.0, CYCLEGAN_BOUND_MASKS),
    "winter2summer": ("cyclegan/summer2winter", RESNET, 64, "summer2winter_yosemite", "BtoA", 1,
                      1e-3, 1.0, 100.0, 4.0, None, 100.0, CYCLEGAN_BOUND_MASKS),
    "horse2zebra_mobile": ("mobile_cyclegan/horse2zebra", MOBILE, 32, "horse2zebra", "AtoB", 1,
                           2e-3, 5.0, 200.0, {"G_A": 2.5, "G_B": 4.0}, None, 100.0,
                           CYCLEGAN_BOUND_MASKS),
    "edges2shoes": ("pix2pix/edges2shoes", UNET, 48, "edges2shoes", "AtoB", 4,
                    1e-2, 0.0, None, 3.0, 0.8, 10.0, set()),
    "edges2shoes_mobile": ("mobile_pix2pix/edges2shoes", MOBILE, 48, "edges2shoes", "AtoB", 1,
                           6e-3, 2.0, 100.0, 4.5, None, 10.0, MOBILE_PIX2PIX_BOUND_MASKS),
    "cityscapes": ("pix2pix/cityscapes", UNET, 48, "cityscapes", "BtoA", 1,
                   1e-2, 0.0, None, 4.0, 0.7, 10.0, set()),
    "cityscapes_mobile": ("mobile_pix2pix/cityscapes", MOBILE, 48, "cityscapes", "BtoA", 1,
                          2e-3, 2.0, 200.0, 4.5, None, 10.0, MOBILE_PIX2PIX_BOUND_MASKS),
}
# name: (model, task, MACs, x, params, x, metric, value) of the README's table.
ROWS = {
    "horse2zebra": ("CycleGAN", "horse2zebra", 3.97e9, 14.3, 0.42e6, 26.9, "fid", 62.41),
    "horse2zebra_mobile": ("CycleGAN*", "horse2zebra", 2.41e9, 23.6, 0.28e6, 40.4, "fid", 62.96),
    "zebra2horse": ("CycleGAN", "zebra2horse", 3.50e9, 16.2, 0.30e6, 37.7, "fid", 139.3),
    "summer2winter": ("CycleGAN", "summer2winter", 3.18e9, 17.9, 0.24e6, 47.1, "fid", 78.24),
    "winter2summer": ("CycleGAN", "winter2summer", 4.29e9, 13.2, 0.45e6, 25.1, "fid", 70.97),
    "edges2shoes": ("Pix2Pix", "edges2shoes", 2.99e9, 6.22, 2.13e6, 25.5, "fid", 46.95),
    "edges2shoes_mobile": ("Pix2Pix*", "edges2shoes", 4.30e9, 4.32, 0.54e6, 100.7, "fid", 24.08),
    "cityscapes": ("Pix2Pix", "cityscapes", 3.96e9, 4.70, 1.73e6, 31.4, "miou", 40.53),
    "cityscapes_mobile": ("Pix2Pix*", "cityscapes", 4.39e9, 4.24, 0.55e6, 98.9, "miou", 41.47),
}
# The full models the rows' ratios divide (MACs, parameters), as DMAD counts them.
ORIGINAL = {"cyclegan": (56.8e9, 11.4e6), "pix2pix": (18.6e9, 54.4e6)}
FID_WEIGHTS = os.path.expanduser(
    "~/.cache/torch/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth")


def _module(name):
  return importlib.import_module(f"configs.dmad.{name}")


def _kind(name):
  return "cyclegan" if SCRIPTS[name][0].split("/")[0].endswith("cyclegan") else "pix2pix"


def _tap_shapes(module, shape):
  """{role: shape} of the features `module` sows on one `shape` input (shape only)."""
  def run(x):
    variables = module.init(jax.random.key(0), x)
    _, state = module.apply(variables, x, mutable=[factory.TAPS])
    return factory.taps(state)
  return jax.eval_shape(run, jax.ShapeDtypeStruct(shape, jnp.float32))


def _param_shapes(module, shape):
  variables = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros(shape))
  return jax.tree.map(lambda s: s.shape, variables["params"])


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_config_is_the_official_script(name):
  (_, generator, ngf, task, direction, batch, lambda_mask, lambda_update, upconv, target_g,
   frozen, attention, _) = SCRIPTS[name]
  kind = _kind(name)
  c = _module(name).get_config()
  assert tuple(c.stage_order) == ORDER
  methods_by_stage = {"teacher": kind, "search": f"dmad_{kind}",
                      "distilled": f"dmad_finetune_{kind}", "undistilled": f"dmad_finetune_{kind}"}
  for stage, method in methods_by_stage.items():
    s = c.stages[stage]
    assert s.method == method
    o = s.optim   # Adam 2e-4 (0.5, 0.999), 100 epochs constant then 100 of linear decay
    assert (o.name, o.learning_rate, o.b1, o.b2, o.weight_decay) == (
        "adam", 2e-4, 0.5, 0.999, 0.0)
    assert (o.schedule, o.n_epochs, o.n_epochs_decay, s.num_epochs) == (
        "gan_linear", 100, 100, 200)
    assert (s.gan.init_type, s.gan.init_gain) == ("normal", 0.02)
    assert s.data.batch_size == batch and s.num_devices == 1
    t = s.data.transform_kwargs
    if kind == "cyclegan":
      assert (s.gan.gan_mode, s.gan.lambda_A, s.gan.lambda_B, s.gan.lambda_identity,
              s.gan.pool_size) == ("lsgan", 10.0, 10.0, 0.5, 50)
      assert (s.data.name, s.data.source_kwargs.task) == ("cycle_gan", task)
      assert (t.load_size, t.crop_size, t.no_flip) == (286, 256, False)
    else:
      assert (s.gan.gan_mode, s.gan.lambda_L1, s.gan.pool_size) == ("hinge", 100.0, 0)
      assert s.data.name == "pix2pix_folder"
      assert (t.load_size, t.crop_size, t.no_flip) == (256, 256, True)
    assert t.get("direction", "AtoB") == direction
  assert c.stages.materialize.report == "dmad_materialize"
  assert tuple(c.stages.materialize.inputs) == ("search",)
  assert c.stages.report.report == "dmad_report"
  assert tuple(c.stages.report.inputs) == ("teacher", "distilled", "undistilled")

  # Networks: the searched generator, the teacher at --pretrain_ngf 64, the discriminator.
  search, teacher = c.stages.search.model, c.stages.teacher.model
  assert (search.generator.name, search.generator.kwargs.ngf) == (generator, ngf)
  assert (teacher.generator.name, teacher.generator.kwargs.ngf) == (generator, 64)
  if generator == UNET:
    assert (search.generator.kwargs.num_downs, search.generator.kwargs.use_dropout) == (8, True)
  else:
    assert search.generator.kwargs.n_blocks == teacher.generator.kwargs.n_blocks == 9
  d = search.discriminator.kwargs
  mobile = generator == MOBILE
  expected_d = ((64, 3, "instance") if kind == "cyclegan" else
                (128, 3, "instance" if mobile else "batch"))
  assert (search.discriminator.name, d.ndf, d.n_layers, d.get("norm", "instance")) == (
      "patchgan_discriminator", *expected_d)
  assert teacher.discriminator.to_dict() == search.discriminator.to_dict()
  # Fine-tuning and the report build the frozen teacher from their model.generator.
  for stage in ("distilled", "undistilled", "report"):
    assert c.stages[stage].model.to_dict() == teacher.to_dict()
  assert c.stages.materialize.model.to_dict() == search.to_dict()

  # Search: the train.sh flags.
  m = c.stages.search.dmad
  assert (m.lambda_mask, m.lambda_update, m.rule, m.update_every) == (
      lambda_mask, lambda_update, "cube", 1)
  want = ({g: v * 1e9 for g, v in target_g.items()} if isinstance(target_g, dict)
          else target_g * 1e9)
  got = m.macs_target.to_dict() if hasattr(m.macs_target, "to_dict") else m.macs_target
  assert got == want and m.macs_input_size == 256 and m.threshold == 0
  assert m.get("frozen_threshold", None) == frozen
  if upconv is not None:
    assert m.sampling_coeff == upconv
  assert c.stages.materialize.dmad.macs_input_size == 256
  # Fine-tuning: the finetune.sh flags; the undistilled comparison drops both weights.
  for stage, on in (("distilled", True), ("undistilled", False)):
    f = c.stages[stage].dmad
    assert (f.lambda_attention, f.lambda_discriminator) == (
        (attention, 1e-4) if on else (0.0, 0.0))
    assert (f.disc_tap, f.disc_last_tap) == ("hidden1", "hidden3")   # model.4, model.10
    assert [tuple(p) for p in c.stages[stage].paths_from] == [
        ("dmad.student", "materialize", "student.json"), ("dmad.teacher", "teacher", "")]
  expected_taps = (("down2", "up6_norm") if generator == UNET
                   else ("down2", "res3", "res6", "res9"))
  assert tuple(c.stages.distilled.dmad.distill_taps) == expected_taps
  assert c.stages.report.dmad.report_metric == "fid"


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_search_method_takes_the_official_mask_roles(name):
  lambda_update, bound_masks = SCRIPTS[name][7], SCRIPTS[name][-1]
  s = _module(name).get_config().stages.search
  method = methods.get(s.method)(s)
  layers = factory.get("float").replace(gate=prune.MaskGate)
  net = build_network(s.model.generator, layers=layers, ngf=4)
  gates = set(prune.mask_params(jax.eval_shape(net.init, jax.random.key(0),
                                               jnp.zeros((1, 256, 256, 3)))["params"]))
  for roles in method.roles.values():
    assert set(roles["sampling"]) == bound_masks   # "bound" penalty x upconv_coeff
    if lambda_update > 0:   # the 10 masks of the residual stream: after down2, each block's 2nd
      assert set(roles["group"]) == {"down2_gate"} | {f"block{b}/gate2" for b in range(9)}
    else:                   # the U-Net: no residual stream, the 15 masks all ordinary
      assert roles["group"] == () and len(roles["ordinary"]) == 15
    assert set(roles["group"]) | set(roles["sampling"]) | set(roles["ordinary"]) == gates


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_taps_exist_and_match_the_teacher_d_at_256(name):
  c = _module(name).get_config()
  kind = _kind(name)
  taps = tuple(c.stages.distilled.dmad.distill_taps)
  d_in = 3 if kind == "cyclegan" else 6    # Pix2Pix's D reads the (input, output) pair
  d_taps = _tap_shapes(build_network(c.stages.teacher.model.discriminator, ndf=4), (1, 256, 256, d_in))
  f = c.stages.distilled.dmad
  assert {f.disc_tap, f.disc_last_tap} <= set(d_taps)
  d_size = d_taps[f.disc_tap].shape[1:3]
  assert d_size == (64, 64)
  for stage in ("teacher", "search"):
    g_taps = _tap_shapes(build_network(c.stages[stage].model.generator, ngf=4), (1, 256, 256, 3))
    assert set(taps) <= set(g_taps)
    for role in taps:
      assert g_taps[role].shape[1:3] == d_size, (stage, role)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_fid_evaluation_and_linked_top_level_keys(name):
  direction = SCRIPTS[name][4]
  c = _module(name).get_config()
  kind = _kind(name)
  split = "test" if kind == "cyclegan" else "val"
  assert c.dmad.inception_weights == FID_WEIGHTS and c.dmad.real_stats is None
  for stage in TRAINING:
    e = c.stages[stage].evals
    assert (e.eval.type, e.eval.split) == ("method", split)
    fid = e.fid
    assert (fid.type, fid.split, fid.real_key, fid.fake_key) == ("fid", split, "real_B", "fake_B")
    if kind == "cyclegan":   # every input image of the test split once
      assert fid.data.source_kwargs.length == ("A" if direction == "AtoB" else "B")
      assert fid.data.source_kwargs.task == c.stages[stage].data.source_kwargs.task
  c.dmad.inception_weights = "weights.pth"
  c.dmad.real_stats = "real_stat_B.npz"
  if kind == "pix2pix":
    c.dmad.dataroot = "data/" + SCRIPTS[name][3]
  for stage in TRAINING:   # as the runner reads each stage
    s = stages_lib.stage_config(c, stage, {n: n for n in ORDER})
    assert (s.evals.fid.inception_weights, s.evals.fid.real_stats) == (
        "weights.pth", "real_stat_B.npz")
    if kind == "pix2pix":
      assert s.data.source_kwargs.root == "data/" + SCRIPTS[name][3]


@pytest.mark.parametrize("name", sorted(ROWS))
def test_paper_row_and_docstring(name):
  module = _module(name)
  row = ROWS[name]
  assert tuple(module.PAPER_ROW) == row
  _, _, macs, macs_x, params, params_x, metric, value = row
  original_macs, original_params = ORIGINAL[_kind(name)]
  # The README's ratios divide the full model by the row (to its rounding).
  assert original_macs / macs == pytest.approx(macs_x, rel=0.01)
  assert original_params / params == pytest.approx(params_x, rel=0.03)
  doc = module.__doc__
  assert f"{macs / 1e9:.2f} G MACs" in doc and f"{params / 1e6:.2f} M parameters" in doc
  assert (f"FID {value}" if metric == "fid" else f"mIoU {value}") in doc
  assert "Command:" in doc and "Hardware:" in doc and "Expected:" in doc
  assert f"--config=configs/dmad/{name}.py" in doc
  if metric == "miou":   # reported as FID, and the docstring says why
    assert "DRN-D-105" in doc and 'metric "fid"' in doc


def test_macs_of_the_teachers_and_the_search_start():
  # GAN MAC convention on 1x3x256x256 (thop's count): the CycleGAN generator is the 56.8 G the
  # ratios divide; the U-Net counts 18.14 G (DMAD quotes 18.6 G).
  c = _module("horse2zebra").get_config()
  assert generator_macs(build_network(c.stages.teacher.model.generator), 256, 3) == (
      pytest.approx(56.8e9, rel=0.001))
  p = _module("edges2shoes").get_config()
  assert generator_macs(build_network(p.stages.teacher.model.generator), 256, 3) == (
      pytest.approx(18.14e9, rel=0.001))
  # Each target lies under the network the search starts from.
  for name in SCRIPTS:
    s = _module(name).get_config().stages.search
    target = s.dmad.macs_target
    for t in (target.to_dict().values() if hasattr(target, "to_dict") else [target]):
      assert t < generator_macs(build_network(s.model.generator), 256, 3)


def test_pix2pix_student_is_set_by_its_widths_under_the_teacher_block(tmp_path):
  # Fine-tuning builds the student from the teacher's block (ngf 64) with student.json's
  # widths: the same network as the searched ngf 48 U-Net cut to those widths.
  c = _module("edges2shoes").get_config()
  search_net = build_network(c.stages.search.model.generator)
  widths = {k: max(1, v // 3) for k, v in search_net.layer_widths().items()}
  path = tmp_path / "student.json"
  path.write_text(json.dumps({"widths": {"G": widths}, "variables_file": "student.msgpack"}))
  s = stages_lib.stage_config(c, "distilled", {"materialize": str(tmp_path), "teacher": "t"})
  s.dmad.student = str(path)
  method = methods.get(s.method)(s)
  shape = (1, 256, 256, 3)
  assert _param_shapes(method.nets["G"], shape) == _param_shapes(
      search_net.clone(widths=widths), shape)
  assert _param_shapes(method.teacher_nets["G"], shape) == _param_shapes(
      build_network(c.stages.teacher.model.generator), shape)


def test_unknown_pix2pix_dataset_is_refused():
  from configs.dmad import _paper
  with pytest.raises(ValueError, match="edges2shoes and cityscapes"):
    _paper.pix2pix_row("facades")


@pytest.mark.parametrize("module,kind", [(quick_cyclegan, "cyclegan"), (quick_pix2pix, "pix2pix")])
def test_quick_variant_builds_the_search_stage(module, kind):
  c = module.get_config("quick")
  assert tuple(c.stage_order) == ORDER
  s = stages_lib.stage_config(c, "search", {})
  setup = loop.build(s)
  method = setup.method
  assert s.method == f"dmad_{kind}"
  assert (setup.steps_per_epoch, setup.total_steps) == (2, 4)
  assert method.macs_targets == {g: module.MACS_TARGET for g in method.GENERATORS}
  generators = ("G_A", "G_B") if kind == "cyclegan" else ("G",)
  assert set(method.roles) == set(generators)
  for g in generators:
    roles = method.roles[g]
    if kind == "cyclegan":   # the residual stream: after down2 and each block's second conv
      n_blocks = s.model.generator.kwargs.n_blocks
      assert set(roles["group"]) == {"down2_gate"} | {f"block{b}/gate2" for b in range(n_blocks)}
      assert set(roles["sampling"]) == CYCLEGAN_BOUND_MASKS
    else:
      assert roles["group"] == () and roles["sampling"] == ()
  taps = tuple(c.stages.distilled.dmad.distill_taps)
  d_in = 3 if kind == "cyclegan" else 6
  d_taps = _tap_shapes(build_network(s.model.discriminator), (1, 256, 256, d_in))
  g_taps = _tap_shapes(build_network(s.model.generator), (1, 256, 256, 3))
  for role in taps:
    assert g_taps[role].shape[1:3] == d_taps["hidden1"].shape[1:3], role


@pytest.mark.slow
def test_wider_teacher_runs_through_every_stage(tmp_path):
  # The Pix2Pix rows' arrangement (teacher ngf 64, search from ngf 48) at toy size: teacher ngf
  # 8, search ngf 4, on the offline pairs; the fine-tuning loads both and the report compares.
  from configs.dmad import _stages
  quick = quick_pix2pix.get_config("quick")
  base = quick.stages.teacher
  teacher = base.model.generator.copy_and_resolve_references()
  teacher.kwargs.ngf = 2 * base.model.generator.kwargs.ngf
  dmad = dict(quick.stages.search.dmad)
  del dmad["report_metric"]
  c = _stages.dmad_stages(base, kind="pix2pix", teacher_epochs=(1, 1), search_epochs=(1, 1),
                          finetune_epochs=(1, 1), dmad=dmad, report_metric="psnr",
                          teacher_generator=teacher)
  for name in c.stage_order:
    c.stages[name].progress = "none"
  loop.run(c, str(tmp_path))
  report = json.loads((tmp_path / "dmad_report.json").read_text())
  student = json.loads((tmp_path / "materialize" / "student.json").read_text())
  assert report["teacher_macs"] == generator_macs(build_network(teacher), 256, 3)
  assert report["student_macs"] == student["G/macs"]
  assert {"teacher/psnr", "distilled/psnr", "undistilled/psnr"} <= set(report)
