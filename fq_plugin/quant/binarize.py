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
    """``fn`` over every dim but the first, kept broadcastable (one value per output row). Sums run in float64,
    like ``_mean``."""
    return fn(w.reshape(w.shape[0], -1).double(), dim=1).to(w.dtype).view((-1,) + (1,) * (w.dim() - 1))


def _mean(w):
    """Mean of all of ``w``, accumulated in float64: the float32 result then does not depend on how torch splits the
    sum across threads, so a checkpoint packed with one thread count runs like its QAT model with another."""
    return w.double().mean().to(w.dtype)


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


def binarize_unsigned_bmt(x):
    """1-bit non-negative activations (ReLU outputs, attention probabilities): the AQT binarizer on [0, B]
    with B = 2 mean(x) per token, i.e. {0, B} with B where x >= mean(x); identity gradient inside [0, B]."""
    bound = 2 * x.detach().mean(dim=-1, keepdim=True)
    hard = torch.where(x >= bound / 2, bound, torch.zeros_like(x))
    inside = (x >= 0) & (x <= bound)
    return torch.where(inside, x + (hard - x).detach(), hard)


def _ste(x, quantized):
    """``quantized`` in the forward pass, identity gradient to ``x``."""
    return x + (quantized - x).detach()


def binarize_weight_centered(w, per_row=True):
    """BitNet (per tensor) / BiT (per row): ``mean|W| * Sign(W - mean W)``; identity gradient."""
    if per_row:
        scale = _row_reduce(w.detach().abs(), torch.mean)
        center = _row_reduce(w.detach(), torch.mean)
    else:
        scale, center = _mean(w.detach().abs()), _mean(w.detach())
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


def split_ternary(w):
    """Ternary weight splitting (BinaryBERT): ``(w1, w2)`` with ``w1 + w2 = w`` whose binarizations
    (``binarize_weight_l1``) add up to the TWN ternarization of ``w``, row by row.

    With I = {ternary != 0}, J = {ternary == 0, w > 0}, K = {ternary == 0, w <= 0}, S_X = sum of |w| over X,
    n the row length and alpha the row's ternary scale: w1 = a w on I, w + b on J, b on K and
    w2 = w - w1, where b = (n alpha - S) / (2 |J u K|) and a = (S_I + S_K - S_J) / (2 S_I). These are the
    values that make mean|w1| = mean|w2| = alpha / 2 while the signs of w1 and w2 agree on I and disagree
    on J u K, which is what the equality of the binarized sum and the ternary weight needs.
    """
    w = w.detach().double()
    _, alpha, kept = ternary_parts(w)
    magnitude = w.abs()
    rest = ~kept
    pos, neg = rest & (w > 0), rest & (w <= 0)
    s_i = _row_reduce(magnitude * kept, torch.sum)
    s_j = _row_reduce(magnitude * pos, torch.sum)
    s_k = _row_reduce(magnitude * neg, torch.sum)
    n_rest = _row_reduce(rest.double(), torch.sum)
    n = w[0].numel()
    b = torch.where(n_rest > 0, (n * alpha - (s_i + s_j + s_k)) / (2 * n_rest.clamp(min=1)), torch.zeros_like(n_rest))
    a = torch.where(s_i > 0, (s_i + s_k - s_j) / (2 * s_i.clamp(min=1e-30)), torch.full_like(s_i, 0.5))
    w1 = torch.where(kept, a * w, torch.where(pos, w + b, b))
    return w1, w - w1
