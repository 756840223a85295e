"""Registered quantized Transformer models."""
from . import fq_transformer  # noqa: F401
