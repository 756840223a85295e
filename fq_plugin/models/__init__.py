"""Registered quantized Transformer models."""
from . import binary_transformer, fq_transformer  # noqa: F401
