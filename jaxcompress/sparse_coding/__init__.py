"""Convolutional sparse coding (FFCSC) with the CoGD correction: solver, data and metrics."""
from jaxcompress.sparse_coding import admm, data, ffcsc, metrics
from jaxcompress.sparse_coding.ffcsc import CscHistory, CscResult, learn_filters
from jaxcompress.sparse_coding.metrics import psnr_bt, ssim_bt
