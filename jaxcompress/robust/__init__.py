"""Adversarial robustness: white-box L-inf attacks (FGSM, PGD, MI-FGSM) as jit-able functions."""
from jaxcompress.robust.attacks import fgsm, input_gradient, mi_fgsm, pgd

__all__ = ["fgsm", "input_gradient", "mi_fgsm", "pgd"]
