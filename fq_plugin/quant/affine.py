"""Uniform affine k-bit fake quantization (seed 003, eq. 1-3) and its straight-through estimator."""
import torch

MIN_BITS, MAX_BITS = 2, 8


def check_bits(bits: int) -> int:
    """Return ``bits`` if it is a supported width, else raise ``ValueError``."""
    if not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"quantization bit width must be an integer in [{MIN_BITS}, {MAX_BITS}], got {bits!r}")
    return bits


def affine_scale(x_min: torch.Tensor, x_max: torch.Tensor, bits: int) -> torch.Tensor:
    """Step size ``s = (x_max - x_min) / (2^k - 1)``.

    A zero range (x_max == x_min) gets s = 1: every value then clamps to x_min and is represented
    exactly, instead of dividing by zero.
    """
    span = x_max - x_min
    return torch.where(span > 0, span / (2**bits - 1), torch.ones_like(span))


class FakeQuantSTE(torch.autograd.Function):
    """Affine fake quantization; the gradient passes unchanged inside [x_min, x_max] and is zero outside,
    unless ``pass_clamped`` (the LayerNorm denominator), where it always passes."""

    @staticmethod
    def forward(ctx, x, x_min, x_max, bits: int, pass_clamped: bool):
        levels = 2**bits - 1
        x_min = x_min.to(x.dtype)
        scale = affine_scale(x_min, x_max.to(x.dtype), bits)
        # round((clamp(x) - x_min) / s) == clamp(round((x - x_min) / s), 0, 2^k - 1): one pass fewer.
        steps = (x - x_min) / scale
        if not pass_clamped:
            ctx.save_for_backward((steps >= 0) & (steps <= levels))
        ctx.pass_clamped = pass_clamped
        return torch.addcmul(x_min, torch.round(steps).clamp_(0, levels), scale)

    @staticmethod
    def backward(ctx, grad):
        if not ctx.pass_clamped:
            (inside,) = ctx.saved_tensors
            grad = grad * inside
        return grad, None, None, None, None


def fake_quantize(x, x_min, x_max, bits: int = 8, pass_clamped: bool = False):
    """Quantize ``x`` to ``bits`` levels between ``x_min`` and ``x_max`` and map back (seed 003, eq. 3).

    Args:
        x: input tensor.
        x_min, x_max: range tensors broadcastable to ``x`` (one value per bucket).
        bits: bit width k in [2, 8].
        pass_clamped: if True the gradient is never zeroed for clamped values.
    Returns:
        A tensor like ``x`` holding at most 2^k distinct values per bucket. +/-Inf saturate to the range.
    """
    if torch.is_grad_enabled() and x.requires_grad:
        return FakeQuantSTE.apply(x, x_min, x_max, bits, pass_clamped)
    x_min = x_min.to(x.dtype)
    return fake_quantize_with_scale(x, x_min, affine_scale(x_min, x_max.to(x.dtype), bits), bits)


def fake_quantize_with_scale(x, x_min, scale, bits: int = 8):
    """The values of :func:`fake_quantize` without gradient bookkeeping, for a precomputed step ``scale``
    (inference: the same operations, so the same bits, as the training path)."""
    steps = (x - x_min) / scale
    return torch.addcmul(x_min, torch.round_(steps).clamp_(0, 2**bits - 1), scale)

