"""Shared pieces of the image-to-image GAN methods (CycleGAN, Pix2Pix, DMAD).

  * `losses`: `GANLoss` ("lsgan", "vanilla", "hinge");
  * `image_pool`: the 50-image history of fakes as a pure, jit-able function;
  * `schedules`: constant then linear learning-rate decay (optimizer schedule "gan_linear");
  * `init`: the official N(0, 0.02) weight initialisation.
"""
from jaxcompress.gan import image_pool, init, losses, schedules
from jaxcompress.gan.losses import GANLoss
