"""Evaluation metrics."""
from jaxcompress.metrics.image_quality import psnr
from jaxcompress.metrics.image_quality import rgb2ycbcr_y
from jaxcompress.metrics.image_quality import ssim
