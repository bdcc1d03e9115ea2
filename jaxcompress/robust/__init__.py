"""Adversarial robustness: white-box L-inf attacks (FGSM, PGD, MI-FGSM) as jit-able functions."""
from jaxcompress.robust.attacks import fgsm
from jaxcompress.robust.attacks import input_gradient
from jaxcompress.robust.attacks import mi_fgsm
from jaxcompress.robust.attacks import pgd

__all__ = ["fgsm", "input_gradient", "mi_fgsm", "pgd"]
