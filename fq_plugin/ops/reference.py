"""Pure-PyTorch reference of every low-bit kernel: the CPU fallback without the extension and the test oracle.

Layouts: activations are row-major ``[M, K]``, weights ``[N, K]`` (the ``nn.Linear`` layout), outputs
float32 ``[M, N]``. Integer parts (dot products of codes, popcounts) are computed exactly (float64 matmul of
small integers is exact below 2^53); the float32 epilogue follows the formula written in each docstring,
term by term, so a kernel differs from it only by float rounding in the epilogue.

Inputs are assumed to have been validated by :mod:`fq_plugin.ops` (dtypes, shapes); value checks that
belong to the math (NaN input, non-zero padding bits) are made here too, so the registered reference op
raises the same errors as the C++ kernels.
"""
import torch

from ..quant.affine import affine_scale, check_bits, fake_quantize_with_scale
from ..quant.parts import layer_norm_from_parts, softmax_from_parts

ABSMAX_LEVELS = 127  # Q_b - 1 for 8-bit symmetric activations (codes in [-127, 127])
MAX_K = 65536  # int32 accumulators of 8-bit products stay exact up to this depth (255 * 128 * K < 2^31)


def words_for(k: int) -> int:
    """Number of int32 words that hold ``k`` packed bits."""
    return (k + 31) // 32


def _column(v: torch.Tensor) -> torch.Tensor:
    """A per-row vector ``[M]`` (or a broadcast ``[1]``) as a ``[M, 1]`` column."""
    return v.reshape(-1, 1)


def _row(v: torch.Tensor) -> torch.Tensor:
    return v.reshape(1, -1)


def _exact_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b.T`` of integer codes, exact (float64 holds every partial sum of these sizes exactly)."""
    return torch.mm(a.to(torch.float64), b.to(torch.float64).t())


def _check_no_nan(x: torch.Tensor, name: str):
    if torch.isnan(x).any():
        raise ValueError(f"{name} contains NaN; quantization of NaN is undefined")


def quantize_affine_u8(x: torch.Tensor, x_min: torch.Tensor, x_max: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Affine codes ``clamp(round((x - x_min) / s), 0, 2^bits - 1)`` with ``s = (x_max - x_min) / (2^bits - 1)``.

    Bit-identical to the codes of :func:`fq_plugin.quant.fake_quantize` (``s = 1`` for a zero range,
    round half to even, a true float32 division).

    Args:
        x: float32 ``[M, K]``.
        x_min, x_max: float32 ``[M]`` (one range per row) or ``[1]`` (one for all rows).
        bits: code width in [2, 8].
    Returns:
        uint8 ``[M, K]``.
    """
    check_bits(bits)
    for t, name in ((x, "x"), (x_min, "x_min"), (x_max, "x_max")):
        _check_no_nan(t, name)
    x_min, x_max = _column(x_min), _column(x_max)
    scale = affine_scale(x_min, x_max, bits)
    return torch.round((x - x_min) / scale).clamp_(0, 2**bits - 1).to(torch.uint8)


def fake_quantize_affine(x: torch.Tensor, x_min: torch.Tensor, scale: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """``x_min + scale * clamp(round((x - x_min) / scale), 0, 2^bits - 1)`` per feature (last dim): the values of
    :func:`fq_plugin.quant.fake_quantize` for the range whose step size is ``scale``.

    Args:
        x: float32 ``[..., C]``.
        x_min, scale: float32 ``[C]`` or ``[1]``.
        bits: code width in [2, 8].
    Returns:
        float32 contiguous tensor shaped like ``x``.
    """
    check_bits(bits)
    _check_no_nan(x, "x")
    return fake_quantize_with_scale(x, x_min, scale, bits).contiguous()


def _grid_quantizer(grid, bits, shape):
    """Fake quantization on a frozen grid ``[2, n]`` (x_min, step size), buckets along the dim of ``shape`` that is
    -1; None for no grid (the part is not quantized)."""
    if grid is None:
        return None
    lo, step = grid[0].reshape(shape), grid[1].reshape(shape)

    def quantize(x):
        _check_no_nan(x, "a quantized part")
        return fake_quantize_with_scale(x, lo, step, bits)
    return quantize


def quantized_softmax(scores, mask, num_grid=None, den_grid=None, out_grid=None, bits: int = 8) -> torch.Tensor:
    """:func:`fq_plugin.quant.parts.softmax_from_parts` with frozen grids, one per head (``[2, H]``) or for all
    (``[2, 1]``).

    Args:
        scores: float32 ``[B, H, T, S]``; mask: bool broadcastable to it, True for masked keys;
        num_grid, den_grid, out_grid: float32 ``[2, H]`` or ``[2, 1]`` (row 0 x_min, row 1 step size) or None
        where the part is not quantized; bits: 2..8.
    Returns:
        float32 contiguous ``[B, H, T, S]``. Raises ``ValueError`` when a quantized part holds NaN.
    """
    check_bits(bits)
    per_head = (1, -1, 1, 1)
    quantizers = (_grid_quantizer(g, bits, per_head) for g in (num_grid, den_grid, out_grid))
    return softmax_from_parts(scores, mask, *quantizers).contiguous()


def lane_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(a * b).sum(-1)`` (broadcast) summed in the order of the C++ kernels (``attention_scores_scalar`` in
    cuda/cpu_kernels.h): 16 lane sums over the last dim, then the lanes added pairwise (8 + 8, 4 + 4, 2 + 2, 1 + 1)."""
    prod = a * b
    lanes = torch.nn.functional.pad(prod, (0, -prod.shape[-1] % 16)).unflatten(-1, (-1, 16))
    acc = torch.zeros_like(lanes[..., 0, :])
    for chunk in lanes.unbind(-2):
        acc = acc + chunk
    width = 8
    while width:
        acc = acc[..., :width] + acc[..., width:2 * width]
        width //= 2
    return acc[..., 0]


def gather_key_rows(t, key_rows, heads: int):
    """``[B * heads, S, D]``: key j of hypothesis b from row ``key_rows[b, j]`` of ``t`` ``[Bk * heads, S, D]``."""
    rows, src_len = key_rows.shape
    by_row = t.reshape(-1, heads, src_len, t.shape[-1])
    gathered = by_row[key_rows, :, torch.arange(src_len, device=t.device)]  # [B, S, heads, D]
    return gathered.transpose(1, 2).reshape(rows * heads, src_len, t.shape[-1])


def quantized_attention(q, k, v, mask, heads: int, kv_grid=None, num_grid=None, den_grid=None, out_grid=None,
                        bits: int = 8, key_rows=None):
    """Attention of decoding queries with the quantized softmax: ``scores = q . k`` (:func:`lane_dot`), probabilities
    :func:`quantized_softmax`, ``out = sum_j probs_j * v_j`` in key order.

    Args:
        q: float32 ``[B * heads, T, D]``; k, v: ``[Bk * heads, S, D]`` with B a multiple of Bk: hypotheses
            ``b * B / Bk`` .. read row b of k and v (one copy per sentence in beam search); float32, or with
            ``kv_grid`` (float32 ``[2, 2]``: x_min and step size of k and v) the uint8 codes of their activation
            quantizers, read as ``x_min + code * step`` (one rounding, as the quantizers); mask: bool broadcastable
            to ``[B, heads, T, S]``, True for masked keys; num/den/out grids, bits: as :func:`quantized_softmax`;
        key_rows: None, or int64 ``[B, S]``: hypothesis b reads key and value j from row ``key_rows[b, j]`` of k and
            v (rows of ``heads`` heads; a decoding cache that beam search does not reorder).
    Returns:
        ``(out, probs)``: float32 ``[T, B * heads, D]`` (fairseq's time-major layout) and ``[B, heads, T, S]``.
    """
    if key_rows is not None:
        k, v = (gather_key_rows(t, key_rows, heads) for t in (k, v))
    if kv_grid is not None:
        k, v = (torch.addcmul(kv_grid[0, i], t.float(), kv_grid[1, i]) for i, t in enumerate((k, v)))
    rows, tgt_len, dim = q.shape
    kv_rows, src_len = k.shape[:2]
    group = rows // kv_rows if kv_rows else 1
    q = q.reshape(kv_rows // heads, group, heads, tgt_len, 1, dim)
    k, v = (t.reshape(kv_rows // heads, 1, heads, 1, src_len, dim) for t in (k, v))
    scores = lane_dot(q, k).reshape(rows // heads, heads, tgt_len, src_len)
    probs = quantized_softmax(scores, mask, num_grid, den_grid, out_grid, bits)
    p = probs.reshape(kv_rows // heads, group, heads, tgt_len, src_len, 1)
    out = q.new_zeros(kv_rows // heads, group, heads, tgt_len, dim)
    for j in range(src_len):
        out = out + p[..., j, :] * v.select(-2, j)
    return out.reshape(rows, tgt_len, dim).transpose(0, 1).contiguous(), probs


def quantized_layer_norm(x, weight, bias, eps: float, num_grid=None, den_grid=None, quot_grid=None, out_grid=None,
                         bits: int = 8) -> torch.Tensor:
    """:func:`fq_plugin.quant.parts.layer_norm_from_parts` with frozen grids, one per feature (``[2, C]``) or for all
    (``[2, 1]``; the denominator has one for all).

    Args:
        x: float32 ``[..., C]``; weight (quantized already), bias: float32 ``[C]``; eps: as LayerNorm's;
        num_grid, den_grid, quot_grid, out_grid: float32 grids as for :func:`quantized_softmax`, or None.
    Returns:
        float32 contiguous tensor shaped like ``x``. Raises ``ValueError`` when a quantized part holds NaN.
    """
    check_bits(bits)
    quantizers = (_grid_quantizer(g, bits, (-1,)) for g in (num_grid, den_grid, quot_grid, out_grid))
    return layer_norm_from_parts(x, weight, bias, eps, *quantizers).contiguous()


def quantize_absmax_i8(x: torch.Tensor):
    """Per-row symmetric 8-bit codes ``clamp(round(x * 127 / gamma), -127, 127)``, ``gamma = max |x|`` per row.

    Args:
        x: float32 ``[M, K]``, finite.
    Returns:
        ``(codes int8 [M, K], scale float32 [M])`` with ``x ~= scale[:, None] * codes``; a row of zeros
        gets codes 0 and scale 0.
    """
    if not torch.isfinite(x).all():
        raise ValueError("x must be finite for absmax quantization (NaN or Inf found)")
    gamma = x.abs().amax(dim=1) if x.shape[1] > 0 else x.new_zeros(x.shape[0])
    safe = torch.where(gamma > 0, gamma, torch.ones_like(gamma))
    codes = torch.round(x * ABSMAX_LEVELS / _column(safe)).clamp_(-ABSMAX_LEVELS, ABSMAX_LEVELS)
    codes = torch.where(_column(gamma) > 0, codes, torch.zeros_like(codes))
    return codes.to(torch.int8), gamma / ABSMAX_LEVELS


def int8_linear(x_q, x_scale, x_zero, w_q, w_scale, w_zero, w_sum, bias=None) -> torch.Tensor:
    """Exact product of affine-dequantized operands, ``x = x_scale * x_q + x_zero``, ``w = w_scale * w_q + w_zero``.

    ``out = x_scale*w_scale*A + x_scale*w_zero*Rx + x_zero*w_scale*w_sum + K*x_zero*w_zero + bias`` with
    ``A = sum_k x_q*w_q`` (exact integer) and ``Rx = sum_k x_q``.

    Args:
        x_q: uint8 ``[M, K]`` activation codes.
        x_scale, x_zero: float32 ``[M]`` or ``[1]``.
        w_q: int8 ``[N, K]`` weight codes.
        w_scale, w_zero: float32 ``[N]``.
        w_sum: int32 ``[N]``, ``sum_k w_q`` (precomputed when the weights are packed).
        bias: float32 ``[N]`` or None.
    Returns:
        float32 ``[M, N]``.
    """
    k = x_q.shape[1]
    a = _exact_dot(x_q, w_q).to(torch.float32)
    rx = _column(x_q.sum(dim=1, dtype=torch.int64).to(torch.float32))
    sx, zx = _column(x_scale), _column(x_zero)
    sw, zw = _row(w_scale), _row(w_zero)
    out = sx * sw * a + sx * zw * rx + zx * sw * _row(w_sum.to(torch.float32)) + k * zx * zw
    return out + bias if bias is not None else out


def int8_linear_symmetric(x_q, x_scale, w_q, w_scale, w_zero, w_sum, bias=None) -> torch.Tensor:
    """:func:`int8_linear` for symmetric int8 activations ``x = x_scale * x_q`` (BitNet-style per token).

    ``out = x_scale*w_scale*A + x_scale*w_zero*Rx + bias``; ``w_sum`` is accepted for a uniform signature
    (kernels may use it to shift signed codes to unsigned ones).

    Args:
        x_q: int8 ``[M, K]``; x_scale: float32 ``[M]`` or ``[1]``; the rest as in :func:`int8_linear`.
    Returns:
        float32 ``[M, N]``.
    """
    a = _exact_dot(x_q, w_q).to(torch.float32)
    rx = _column(x_q.sum(dim=1, dtype=torch.int64).to(torch.float32))
    sx = _column(x_scale)
    out = sx * _row(w_scale) * a + sx * _row(w_zero) * rx
    return out + bias if bias is not None else out


def pack_signs(x: torch.Tensor) -> torch.Tensor:
    """Pack ``x > 0`` (or a bool ``x``) into int32 words: bit j of word w is element ``32 w + j``.

    Args:
        x: ``[M, K]`` float or bool.
    Returns:
        int32 ``[M, ceil(K / 32)]``; padding bits are 0.
    """
    m, k = x.shape
    bits = (x if x.dtype == torch.bool else x > 0).to(torch.int64)
    kw = words_for(k)
    padded = torch.zeros(m, kw * 32, dtype=torch.int64, device=x.device)
    padded[:, :k] = bits
    words = (padded.view(m, kw, 32) << torch.arange(32, device=x.device)).sum(dim=2)
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def unpack_signs(bits: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse of :func:`pack_signs` as signs: float32 ``[M, k]`` of +1 (bit 1) and -1 (bit 0)."""
    return _unpack_bits(bits, k).to(torch.float32) * 2 - 1


def _unpack_bits(bits: torch.Tensor, k: int) -> torch.Tensor:
    """0/1 int64 ``[M, k]`` of packed words ``[M, ceil(k / 32)]``."""
    shifts = torch.arange(32, device=bits.device)
    b = (bits.to(torch.int64).unsqueeze(-1) >> shifts) & 1
    return b.reshape(bits.shape[0], -1)[:, :k]


def check_padding_bits(bits: torch.Tensor, k: int, name: str):
    """Raise ``ValueError`` if any bit past column ``k`` is set (kernels rely on zero padding)."""
    rem = k % 32
    if rem and bits.shape[0] and bits.shape[1]:
        last = bits[:, -1].to(torch.int64) & 0xFFFFFFFF
        if (last >> rem).any():
            raise ValueError(f"{name}: padding bits past K={k} must be 0 (use pack_signs)")


def binary_linear_w1a8(x_q, x_scale, w_bits, w_scale, bias, k: int, planes: int = 1) -> torch.Tensor:
    """1-bit weights x 8-bit activations: ``x_scale*w_scale*sum_p sum_k sgn_p[n,k]*x_q[m,k] + bias``.

    Args:
        x_q: int8 ``[M, K]``; x_scale: float32 ``[M]`` or ``[1]``.
        w_bits: int32 ``[planes*N, ceil(K/32)]`` from :func:`pack_signs` (bit 1 = +1, bit 0 = -1); row
            ``p*N + n`` is plane ``p`` of output ``n``. Two planes sharing one scale per row are a ternary weight.
        w_scale: float32 ``[N]``; bias: float32 ``[N]`` or None; k: K; planes: 1 or 2.
    Returns:
        float32 ``[M, N]``.
    """
    check_padding_bits(w_bits, k, "w_bits")
    sgn = _unpack_bits(w_bits, k) * 2 - 1
    dot = _exact_dot(x_q, sgn)
    dot = sum(dot.chunk(planes, dim=1)).to(torch.float32)
    out = _column(x_scale) * _row(w_scale) * dot
    return out + bias if bias is not None else out


def binary_linear_w1a1(x_bits, x_scale, w_bits, w_scale, bias, k: int, unsigned: bool = False) -> torch.Tensor:
    """1-bit weights x 1-bit activations by popcounts.

    Signed activations (+-1): ``x_scale*w_scale*(K - 2*popcount(x xor w))``. Unsigned activations
    ({0, 1}, bit 1 = 1): ``x_scale*w_scale*(2*popcount(x and w) - popcount(x))``.

    Args:
        x_bits: int32 ``[M, ceil(K/32)]``; x_scale: float32 ``[M]`` or ``[1]``.
        w_bits: int32 ``[N, ceil(K/32)]``; w_scale: float32 ``[N]``; bias: float32 ``[N]`` or None.
        k: K; unsigned: activation set {0, 1} instead of {-1, +1}.
    Returns:
        float32 ``[M, N]``.
    """
    check_padding_bits(x_bits, k, "x_bits")
    check_padding_bits(w_bits, k, "w_bits")
    xb, wb = _unpack_bits(x_bits, k), _unpack_bits(w_bits, k)
    if unsigned:
        both = _exact_dot(xb, wb)
        dot = 2 * both - _column(xb.sum(dim=1).to(torch.float64))
    else:
        differ = _exact_dot(xb, 1 - wb) + _exact_dot(1 - xb, wb)
        dot = k - 2 * differ
    out = _column(x_scale) * _row(w_scale) * dot.to(torch.float32)
    return out + bias if bias is not None else out


def pack_ternary(t: torch.Tensor) -> torch.Tensor:
    """Pack ternary int8 ``{-1, 0, 1}`` ``[N, K]`` four to a byte (2 bits each, element ``4 b + j`` at bits
    ``2j..2j+1``; codes 0 -> 0, 1 -> 1, -1 -> 2; padding 0).

    Returns:
        uint8 ``[N, ceil(K / 4)]``.
    """
    if t.dtype != torch.int8 or t.dim() != 2:
        raise TypeError(f"pack_ternary expects an int8 [N, K] tensor, got {t.dtype} with shape {tuple(t.shape)}")
    if ((t < -1) | (t > 1)).any():
        raise ValueError("pack_ternary: values must be in {-1, 0, 1}")
    n, k = t.shape
    kb = (k + 3) // 4
    codes = torch.zeros(n, kb * 4, dtype=torch.int32, device=t.device)
    codes[:, :k] = torch.where(t < 0, 2, t.to(torch.int32))
    codes = codes.view(n, kb, 4) << (2 * torch.arange(4, device=t.device, dtype=torch.int32))
    return codes.sum(dim=2).to(torch.uint8)


def unpack_ternary(packed: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse of :func:`pack_ternary`: int8 ``[N, k]`` in ``{-1, 0, 1}``."""
    if packed.dtype != torch.uint8 or packed.dim() != 2 or packed.shape[1] != (k + 3) // 4:
        raise TypeError(f"unpack_ternary expects uint8 [N, ceil(K/4)] for K={k}, got {packed.dtype} "
                        f"with shape {tuple(packed.shape)}")
    shifts = 2 * torch.arange(4, device=packed.device, dtype=torch.int32)
    codes = ((packed.to(torch.int32).unsqueeze(-1) >> shifts) & 3).reshape(packed.shape[0], -1)[:, :k]
    if (codes == 3).any():
        raise ValueError("unpack_ternary: invalid 2-bit code 3 in packed data")
    return torch.where(codes == 2, -1, codes).to(torch.int8)
