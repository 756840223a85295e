"""1-bit, ternary and per-token 8-bit quantizers of the binarized Transformers (BMT, BitNet, BiT, BinaryBERT).

Every function returns the *dequantized* tensor (values on the low-bit grid times their scale), so a
model trains with them like with fake quantization; gradients follow the straight-through estimators
named in each docstring.
"""
import torch

AQT_EPS = 2.0 ** -7
ABSMAX_LEVELS = 127  # BitNet's Q_b - 1 for b = 8, so that codes fit int8


def _sign(x):
    """+1 where x > 0, else -1 (Sign(0) = -1, as BitNet defines it)."""
    return torch.where(x > 0, torch.ones_like(x), -torch.ones_like(x))


def _row_reduce(w, fn):
    """``fn`` over every dim but the first, kept broadcastable (one value per output row)."""
    return fn(w.reshape(w.shape[0], -1), dim=1).view((-1,) + (1,) * (w.dim() - 1))


class AQTBinarizeSTE(torch.autograd.Function):
    """BMT's binarizer ``B * (floor(clip(x/B, -1+eps, 1-eps)) + 0.5)``: identity gradient through the
    floor, zero gradient where ``x/B`` is clipped."""

    @staticmethod
    def forward(ctx, x, bound):
        bound = torch.where(bound > 0, bound, torch.ones_like(bound))  # all-zero rows stay finite
        ratio = x / bound
        ctx.save_for_backward(ratio.abs() <= 1 - AQT_EPS)
        return bound * (torch.floor(ratio.clamp(-1 + AQT_EPS, 1 - AQT_EPS)) + 0.5)

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return grad * inside, None


def aqt_binarize(x, bound):
    """Values +-bound/2 (BMT). ``bound`` broadcasts against ``x`` (max|w| per row for weights)."""
    return AQTBinarizeSTE.apply(x, bound.detach())


def binarize_weight_bmt(w):
    """BMT weights: AQT binarizer with one bound B = max|w| per output channel."""
    return aqt_binarize(w, _row_reduce(w.detach().abs(), torch.amax))


def binarize_tokens_bmt(x):
    """BMT activations: AQT binarizer with one bound per token (max|x| over the features)."""
    return aqt_binarize(x, x.detach().abs().amax(dim=-1, keepdim=True))


def binarize_probs_bmt(p):
    """1-bit attention probabilities: {0, m} with m the row's largest probability (keys with p >= m/2
    keep m); identity gradient."""
    peak = p.detach().amax(dim=-1, keepdim=True)
    hard = torch.where(p >= peak / 2, peak, torch.zeros_like(p))
    return p + (hard - p).detach()


def _ste(x, quantized):
    """``quantized`` in the forward pass, identity gradient to ``x``."""
    return x + (quantized - x).detach()


def binarize_weight_centered(w, per_row=True):
    """BitNet (per tensor) / BiT (per row): ``mean|W| * Sign(W - mean W)``; identity gradient."""
    if per_row:
        scale = _row_reduce(w.detach().abs(), torch.mean)
        center = _row_reduce(w.detach(), torch.mean)
    else:
        scale, center = w.detach().abs().mean(), w.detach().mean()
    return _ste(w, scale * _sign(w.detach() - center))


def binarize_weight_l1(w):
    """BinaryBERT's binarizer ``mean|w| * Sign(w)`` per row (the form ternary weight splitting targets)."""
    return _ste(w, _row_reduce(w.detach().abs(), torch.mean) * _sign(w.detach()))


def ternarize_weight(w):
    """TWN ternary weights per row: Delta = 0.7 mean|w|, alpha = mean(|w| : |w| > Delta), values
    {-alpha, 0, alpha}; identity gradient."""
    return _ste(w, ternary_parts(w.detach())[0])


def ternary_parts(w):
    """``(ternary values, alpha, kept mask)`` of TWN per row, without gradient."""
    magnitude = w.abs()
    delta = 0.7 * _row_reduce(magnitude, torch.mean)
    kept = magnitude > delta
    kept_sum = _row_reduce(magnitude * kept, torch.sum)
    kept_count = _row_reduce(kept.to(w.dtype), torch.sum)
    alpha = kept_sum / kept_count.clamp(min=1)
    return alpha * torch.sign(w) * kept, alpha, kept


def quantize_tokens_absmax(x, levels=ABSMAX_LEVELS):
    """BitNet activations: per token ``clip(round(x * Q / gamma), -Q, Q) * gamma / Q`` with gamma = max|x|;
    identity gradient. Tokens that are all zero stay zero."""
    gamma = x.detach().abs().amax(dim=-1, keepdim=True)
    step = torch.where(gamma > 0, gamma / levels, torch.ones_like(gamma))
    codes = torch.round(x.detach() / step).clamp_(-levels, levels)
    return _ste(x, codes * step)


def elastic_binarize(x, alpha, shift=None, unsigned=False):
    """BiT's elastic binary activation: ``alpha * Sign(x + b)`` ({-alpha, alpha}) or, unsigned,
    ``alpha * clamp(round((x + b) / alpha), 0, 1)`` ({0, alpha}). Gradients are LSQ's: to x (and b) where
    (x + b)/alpha lies inside the clip range, to alpha through ``q - (x + b)/alpha`` inside and ``q`` outside.

    Args:
        x: activations; alpha: positive scalar tensor (learned); shift: per-feature tensor or None.
    """
    if shift is not None:
        x = x + shift
    ratio = x / alpha
    if unsigned:
        clipped = ratio.clamp(0, 1)
        level = torch.round(clipped)
    else:
        clipped = ratio.clamp(-1, 1)
        level = _sign(clipped)
    return alpha * _ste(clipped, level)
