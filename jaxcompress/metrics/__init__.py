"""Evaluation metrics."""
from jaxcompress.metrics.image_quality import psnr, rgb2ycbcr_y, ssim
