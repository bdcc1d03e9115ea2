"""configs/gan against the papers and the official code (numbers written out here).

CycleGAN (arXiv 1703.10593; junyanz/pytorch-CycleGAN-and-pix2pix, SJLeo/DMAD `models/CycleGAN.py`
and `options/options.py`) and DMAD's Pix2Pix (arXiv 2011.08382; SJLeo/DMAD `models/Pix2Pix.py`,
`scripts/pix2pix/edges2shoes/*.sh` with the teacher's `--pretrain_ngf` 64).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from configs.gan import cyclegan_quick, edges2shoes, horse2zebra, pix2pix_quick
from jaxcompress import methods
from jaxcompress.data import sources, transforms


def _num_params(module, shape):
  variables = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros(shape))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))


def _check_optimizer(c, n_epochs=100, n_decay=100):
  o = c.optim
  assert (o.name, o.learning_rate, o.b1, o.b2, o.weight_decay) == ("adam", 2e-4, 0.5, 0.999, 0.0)
  assert (o.schedule, o.n_epochs, o.n_epochs_decay, o.epoch_count) == (
      "gan_linear", n_epochs, n_decay, 1)
  assert c.num_epochs == n_epochs + n_decay
  assert (c.gan.init_type, c.gan.init_gain) == ("normal", 0.02)


class GANConfigsTest(parameterized.TestCase):

  def test_horse2zebra_is_the_official_cyclegan(self):
    c = horse2zebra.get_config()
    self.assertEqual(c.method, "cyclegan")
    _check_optimizer(c)
    self.assertEqual((c.gan.gan_mode, c.gan.lambda_A, c.gan.lambda_B, c.gan.lambda_identity,
                      c.gan.pool_size), ("lsgan", 10.0, 10.0, 0.5, 50))
    self.assertEqual(c.data.batch_size, 1)
    self.assertEqual((c.data.name, c.data.source_kwargs.task), ("cycle_gan", "horse2zebra"))
    t = c.data.transform_kwargs
    self.assertEqual((c.data.transform, t.load_size, t.crop_size, t.no_flip),
                     ("gan_resize_crop", 286, 256, False))
    m = methods.get(c.method)(c)
    # ResNet-9blocks ngf 64: 11.378 M parameters; 70x70 PatchGAN ndf 64: 2.765 M.
    self.assertEqual(round(_num_params(m.nets["G_A"], (1, 256, 256, 3)) / 1e3), 11378)
    self.assertEqual(round(_num_params(m.nets["D_A"], (1, 256, 256, 3)) / 1e3), 2765)
    self.assertEqual(m.nets["D_A"].norm, "instance")

  def test_edges2shoes_is_dmads_pix2pix_teacher(self):
    c = edges2shoes.get_config()
    self.assertEqual(c.method, "pix2pix")
    _check_optimizer(c)
    self.assertEqual((c.gan.gan_mode, c.gan.lambda_L1, c.gan.pool_size), ("hinge", 100.0, 0))
    self.assertEqual(c.data.batch_size, 4)
    self.assertEqual((c.data.name, c.data.eval_split), ("pix2pix_folder", "val"))
    t = c.data.transform_kwargs
    self.assertEqual((t.load_size, t.crop_size, t.no_flip), (256, 256, True))
    m = methods.get(c.method)(c)
    g, d = m.nets["G"], m.nets["D"]
    self.assertEqual((g.ngf, g.num_downs, g.use_dropout), (64, 8, True))
    self.assertEqual((d.ndf, d.n_layers, d.norm), (128, 3, "batch"))
    # unet_256 ngf 64: 54.4 M parameters (DMAD's full Pix2Pix).
    self.assertAlmostEqual(_num_params(g, (1, 256, 256, 3)) / 1e6, 54.4, delta=0.05)
    # PatchGAN ndf 128 on 6 channels, batch norm, convs before a norm without bias:
    # 4x4 convs 6->128 (+bias), 128->256, 256->512, 512->1024, BN scale+offset, 1024->1 (+bias).
    want = (16 * 6 * 128 + 128) + sum(16 * i * o + 2 * o for i, o in
                                       ((128, 256), (256, 512), (512, 1024))) + (16 * 1024 + 1)
    self.assertEqual(_num_params(d, (1, 256, 256, 6)), want)

  @parameterized.parameters(cyclegan_quick, pix2pix_quick)
  def test_quick_configs(self, module):
    c = module.get_config()
    _check_optimizer(c, 3, 3)
    self.assertIn(c.data.name, ("gan_offline_unpaired", "gan_offline_paired"))
    transforms.load_providers()
    source = sources.get(c.data.name, c.data.train_split, **c.data.source_kwargs)
    # 3 + 3 epochs of 50 steps: a few hundred steps.
    self.assertEqual(len(source) // c.data.batch_size * c.num_epochs, 300)
    self.assertEqual(c.data.transform_kwargs.crop_size, 64)
    q = module.get_config("quick")
    self.assertEqual(q.num_epochs, 2)


if __name__ == "__main__":
  absltest.main()
