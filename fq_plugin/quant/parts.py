"""Softmax and LayerNorm computed from separately quantized parts (seed 003 §3.2).

One definition serves training (the quantizers with their range statistics and straight-through gradients) and
the reference of the fused inference ops (frozen grids), so both compute the same thing. ``quantize_*`` are
callables applied to a part, or None where that point is not quantized.
"""
import torch


def _apply(quantize, x):
    return x if quantize is None else quantize(x)


def softmax_from_parts(scores, masked, quantize_num=None, quantize_den=None, quantize_out=None):
    """Attention probabilities over the last dim with the numerator exp(s - max s), the denominator and the
    output quantized. The denominator sums the unquantized numerator (seed 003 §3.2); masked keys (``masked``
    True, broadcastable to ``scores``) get exact zeros, since quantization would lift them to x_min (§3.4); a
    query whose every key is masked gets all-zero probabilities instead of 0/0.

    Args:
        scores: float32 ``[B, H, T, S]``; masked: bool, broadcastable to it.
    """
    scores = scores.masked_fill(masked, float("-inf"))
    row_max = scores.amax(dim=-1, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    numerator = torch.exp(scores - row_max)
    denominator = numerator.sum(dim=-1, keepdim=True)
    numerator = _apply(quantize_num, numerator).masked_fill(masked, 0.0)
    denominator = _apply(quantize_den, denominator)
    denominator = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    return _apply(quantize_out, numerator / denominator).masked_fill(masked, 0.0)


def layer_norm_from_parts(x, weight, bias, eps, quantize_num=None, quantize_den=None, quantize_quot=None,
                          quantize_out=None):
    """LayerNorm over the last dim as ((x - mean) / sqrt(var + eps)) * weight + bias with the numerator, the
    denominator, the quotient and the output quantized (``weight`` comes quantized already)."""
    centered = x - x.mean(dim=-1, keepdim=True)
    denominator = torch.sqrt(centered.pow(2).mean(dim=-1, keepdim=True) + eps)
    quotient = _apply(quantize_quot, _apply(quantize_num, centered) / _apply(quantize_den, denominator))
    return _apply(quantize_out, quotient * weight + bias)
