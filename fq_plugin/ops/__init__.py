"""Low-bit GEMM ops: int8 x int8, 1-bit x 8-bit and 1-bit x 1-bit linear layers, quantizers and bit packing.

Every op is a ``torch.library`` custom op ``torch.ops.fq_plugin.<name>``. When the extension
``fq_plugin._C`` is built its C++ kernels serve CPU tensors (runtime choice of AVX-512 VNNI, AVX2 or
portable code) and its CUDA kernels serve CUDA tensors; the pure-PyTorch reference
(:mod:`fq_plugin.ops.reference`) is registered for every other case, so the ops work everywhere.
``FQ_PLUGIN_DISABLE_EXT=1`` forces the reference, ``FQ_PLUGIN_CPU_ISA=portable|avx2|avx512`` a lower CPU path,
``FQ_PLUGIN_INT8_GEMM=kernels|int_mm`` who multiplies int8 matrices (see :func:`set_int8_gemm`).

The public functions below validate their arguments (clear ``TypeError``/``ValueError``) and call the op.
"""
import torch

from . import _ext, reference
from .reference import MAX_K, pack_ternary, unpack_ternary, words_for

__all__ = ["quantize_affine_u8", "quantize_absmax_i8", "fake_quantize_affine", "int8_linear", "int8_linear_symmetric",
           "pack_signs", "unpack_signs", "binary_linear_w1a8", "binary_linear_w1a1", "pack_ternary", "unpack_ternary",
           "quantized_softmax", "quantized_attention", "quantized_layer_norm",
           "extension_available", "backend_info", "set_cpu_isa", "set_int8_gemm", "words_for", "SCHEMAS"]

# One schema per op; the C++ extension defines the same strings (tests compare them).
SCHEMAS = {
    "quantize_affine_u8": "quantize_affine_u8(Tensor x, Tensor x_min, Tensor x_max, int bits=8) -> Tensor",
    "quantize_absmax_i8": "quantize_absmax_i8(Tensor x) -> (Tensor, Tensor)",
    "fake_quantize_affine": "fake_quantize_affine(Tensor x, Tensor x_min, Tensor scale, int bits=8) -> Tensor",
    "int8_linear": "int8_linear(Tensor x_q, Tensor x_scale, Tensor x_zero, Tensor w_q, Tensor w_scale, "
                   "Tensor w_zero, Tensor w_sum, Tensor? bias=None) -> Tensor",
    "int8_linear_symmetric": "int8_linear_symmetric(Tensor x_q, Tensor x_scale, Tensor w_q, Tensor w_scale, "
                             "Tensor w_zero, Tensor w_sum, Tensor? bias=None) -> Tensor",
    "pack_signs": "pack_signs(Tensor x) -> Tensor",
    "binary_linear_w1a8": "binary_linear_w1a8(Tensor x_q, Tensor x_scale, Tensor w_bits, Tensor w_scale, "
                          "Tensor? bias, int K, int planes=1) -> Tensor",
    "binary_linear_w1a1": "binary_linear_w1a1(Tensor x_bits, Tensor x_scale, Tensor w_bits, Tensor w_scale, "
                          "Tensor? bias, int K, bool unsigned_act=False) -> Tensor",
    "quantized_softmax": "quantized_softmax(Tensor scores, Tensor mask, Tensor? num_grid, Tensor? den_grid, "
                         "Tensor? out_grid, int bits=8) -> Tensor",
    "quantized_attention": "quantized_attention(Tensor q, Tensor k, Tensor v, Tensor mask, int heads, "
                           "Tensor? kv_grid, Tensor? num_grid, Tensor? den_grid, Tensor? out_grid, int bits=8, "
                           "Tensor? key_rows=None) -> (Tensor, Tensor)",
    "quantized_layer_norm": "quantized_layer_norm(Tensor x, Tensor weight, Tensor bias, float eps, Tensor? num_grid, "
                            "Tensor? den_grid, Tensor? quot_grid, Tensor? out_grid, int bits=8) -> Tensor",
}

_REFERENCE_IMPLS = {
    "quantize_affine_u8": reference.quantize_affine_u8,
    "quantize_absmax_i8": reference.quantize_absmax_i8,
    "fake_quantize_affine": reference.fake_quantize_affine,
    "int8_linear": reference.int8_linear,
    "int8_linear_symmetric": reference.int8_linear_symmetric,
    "pack_signs": reference.pack_signs,
    "binary_linear_w1a8": reference.binary_linear_w1a8,
    "binary_linear_w1a1": reference.binary_linear_w1a1,
    "quantized_softmax": reference.quantized_softmax,
    "quantized_attention": reference.quantized_attention,
    "quantized_layer_norm": reference.quantized_layer_norm,
}


def _register():
    """Define the ops when the extension did not, and register the reference for devices without a kernel."""
    if _ext.module() is None:
        lib = torch.library.Library("fq_plugin", "DEF")
        for schema in SCHEMAS.values():
            lib.define(schema)
    else:
        lib = torch.library.Library("fq_plugin", "IMPL")
    # CompositeExplicitAutograd serves every backend that has no kernel of its own (CPU without the
    # extension, CUDA when the extension was built without CUDA); the C++ kernels take precedence.
    for name, fn in _REFERENCE_IMPLS.items():
        lib.impl(name, fn, "CompositeExplicitAutograd")
    _register_fakes()
    return lib


def _register_fakes():
    """Shape functions for FakeTensor / torch.compile / opcheck."""
    def out_mn(x, w):
        return x.new_empty((x.shape[0], w.shape[0]), dtype=torch.float32)

    torch.library.register_fake("fq_plugin::quantize_affine_u8")(
        lambda x, x_min, x_max, bits=8: x.new_empty(x.shape, dtype=torch.uint8))
    torch.library.register_fake("fq_plugin::quantize_absmax_i8")(
        lambda x: (x.new_empty(x.shape, dtype=torch.int8), x.new_empty((x.shape[0],), dtype=torch.float32)))
    torch.library.register_fake("fq_plugin::fake_quantize_affine")(
        lambda x, x_min, scale, bits=8: torch.empty_like(x, memory_format=torch.contiguous_format))
    torch.library.register_fake("fq_plugin::int8_linear")(
        lambda x_q, x_scale, x_zero, w_q, *args: out_mn(x_q, w_q))
    torch.library.register_fake("fq_plugin::int8_linear_symmetric")(
        lambda x_q, x_scale, w_q, *args: out_mn(x_q, w_q))
    torch.library.register_fake("fq_plugin::pack_signs")(
        lambda x: x.new_empty((x.shape[0], words_for(x.shape[1])), dtype=torch.int32))
    torch.library.register_fake("fq_plugin::binary_linear_w1a8")(
        lambda x_q, x_scale, w_bits, w_scale, *args: out_mn(x_q, w_scale))
    torch.library.register_fake("fq_plugin::binary_linear_w1a1")(
        lambda x_bits, x_scale, w_bits, *args: out_mn(x_bits, w_bits))
    torch.library.register_fake("fq_plugin::quantized_softmax")(
        lambda scores, *args: torch.empty_like(scores, memory_format=torch.contiguous_format))
    torch.library.register_fake("fq_plugin::quantized_attention")(
        lambda q, k, v, mask, heads, *args: (q.new_empty((q.shape[1], q.shape[0], q.shape[2])),
                                             q.new_empty((q.shape[0] // heads, heads, q.shape[1], k.shape[1]))))
    torch.library.register_fake("fq_plugin::quantized_layer_norm")(
        lambda x, *args: torch.empty_like(x, memory_format=torch.contiguous_format))


_LIB = _register()


def extension_available() -> bool:
    """True when the C++ extension is loaded (its kernels serve CPU tensors)."""
    return _ext.module() is not None


def backend_info() -> dict:
    """Which implementation serves the ops.

    Returns:
        dict with ``extension`` (bool), ``cause`` (why not, or None), ``cpu`` (the selected CPU path:
        ``avx512-vnni``, ``avx2``, ``portable`` or ``reference``), ``cpu_paths`` (paths this CPU can run),
        ``int8_gemm`` (the :func:`set_int8_gemm` setting, or ``reference``) and ``cuda`` (whether CUDA kernels
        were built).
    """
    mod = _ext.module()
    if mod is None:
        return {"extension": False, "cause": _ext.cause(), "cpu": "reference", "cpu_paths": [],
                "int8_gemm": "reference", "cuda": False}
    return {"extension": True, "cause": None, "cpu": mod.cpu_isa(), "cpu_paths": list(mod.supported_cpu_isas()),
            "int8_gemm": mod.int8_gemm(), "cuda": bool(mod.has_cuda())}


def set_cpu_isa(name: str) -> str:
    """Force a CPU path (``avx512``/``avx512-vnni``, ``avx2``, ``portable``, or ``auto`` for the best one).

    Returns:
        The selected path's name. Raises ``ValueError`` if this CPU cannot run it and ``RuntimeError``
        without the extension.
    """
    mod = _ext.module()
    if mod is None:
        raise RuntimeError(f"fq_plugin C++ extension {_ext.cause()}; no CPU path to select")
    return mod.set_cpu_isa(name)


def set_int8_gemm(name: str) -> str:
    """Who multiplies int8 matrices on the CPU (``int8_linear``, ``int8_linear_symmetric``, ``binary_linear_w1a8``
    with its signs expanded to int8): ``int_mm`` (``torch._int_mm``, oneDNN, then our epilogue), ``kernels`` (our
    own), or ``auto``: ``int_mm`` on the AVX-512 VNNI path from 16 rows on, where it is faster, our kernels otherwise
    (``scripts/bench/bench_int8_gemm.py``, BENCHMARKS.md).

    Returns:
        ``name``. Raises ``ValueError`` for an unknown name and ``RuntimeError`` without the extension.
    """
    mod = _ext.module()
    if mod is None:
        raise RuntimeError(f"fq_plugin C++ extension {_ext.cause()}; no int8 GEMM to select")
    return mod.set_int8_gemm(name)


# ---------------------------------------------------------------------------------------------------------
# argument checks: one clear error per mistake, before any kernel runs

def _tensor(t, name, dtype, dim):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if dtype is not None and t.dtype != dtype:
        raise TypeError(f"{name} must be {dtype}, got {t.dtype}")
    if t.dim() != dim:
        raise ValueError(f"{name} must be {dim}-D, got shape {tuple(t.shape)}")


def _vector(t, name, dtype, n, broadcast_ok=False):
    _tensor(t, name, dtype, 1)
    if t.shape[0] != n and not (broadcast_ok and t.shape[0] == 1):
        want = f"[{n}] or [1]" if broadcast_ok else f"[{n}]"
        raise ValueError(f"{name} must have shape {want}, got {tuple(t.shape)}")


def _same_device(*named):
    tensors = [t for t in named if t is not None]
    if all(t.is_cpu for t in tensors):  # the common case, without building device objects
        return
    devices = {t.device for t in tensors}
    if len(devices) > 1:
        raise ValueError(f"all tensors must be on one device, got {sorted(str(d) for d in devices)}")


def _check_k(k):
    if k > MAX_K:
        raise ValueError(f"K={k} exceeds {MAX_K}: int32 accumulation of 8-bit products could overflow")


def _check_weights(w, w_name, w_dtype, w_cols, w_scale, bias, extra=()):
    _tensor(w, w_name, w_dtype, 2)
    if w.shape[1] != w_cols:
        raise ValueError(f"{w_name} must have {w_cols} columns to match the activations, got shape {tuple(w.shape)}")
    n = w.shape[0]
    _vector(w_scale, "w_scale", torch.float32, n)
    for t, name, dtype in extra:
        _vector(t, name, dtype, n)
    if bias is not None:
        _vector(bias, "bias", torch.float32, n)


# ---------------------------------------------------------------------------------------------------------
# public functions

def quantize_affine_u8(x, x_min, x_max, bits: int = 8) -> torch.Tensor:
    """Affine codes of ``x`` (see :func:`fq_plugin.ops.reference.quantize_affine_u8`, bit-identical to
    :func:`fq_plugin.quant.fake_quantize`).

    Args:
        x: float32 ``[M, K]``; x_min, x_max: float32 ``[M]`` or ``[1]``; bits: 2..8.
    Returns:
        uint8 ``[M, K]``. Raises ``ValueError`` on NaN.
    """
    _tensor(x, "x", torch.float32, 2)
    _vector(x_min, "x_min", torch.float32, x.shape[0], broadcast_ok=True)
    _vector(x_max, "x_max", torch.float32, x.shape[0], broadcast_ok=True)
    _same_device(x, x_min, x_max)
    reference.check_bits(bits)
    return torch.ops.fq_plugin.quantize_affine_u8(x, x_min, x_max, bits)


def quantize_absmax_i8(x):
    """Per-row symmetric int8 codes (BitNet activations), see :func:`fq_plugin.ops.reference.quantize_absmax_i8`.

    Args:
        x: float32 ``[M, K]``, finite.
    Returns:
        ``(int8 [M, K], scale float32 [M])``. Raises ``ValueError`` on NaN/Inf.
    """
    _tensor(x, "x", torch.float32, 2)
    return torch.ops.fq_plugin.quantize_absmax_i8(x)


def fake_quantize_affine(x, x_min, scale, bits: int = 8) -> torch.Tensor:
    """Affine fake quantization with a frozen grid in one pass (see
    :func:`fq_plugin.ops.reference.fake_quantize_affine`; bit-identical to it).

    Args:
        x: float32 ``[..., C]``; x_min, scale: float32 ``[C]`` (one range per feature) or ``[1]``; bits: 2..8.
    Returns:
        float32 tensor shaped like ``x``. Raises ``ValueError`` on NaN.
    """
    if not isinstance(x, torch.Tensor) or x.dtype != torch.float32 or x.dim() < 1:
        raise TypeError(f"x must be a float32 tensor with at least one dimension, got {x!r:.80}")
    _vector(x_min, "x_min", torch.float32, x.shape[-1], broadcast_ok=True)
    _vector(scale, "scale", torch.float32, x.shape[-1], broadcast_ok=True)
    if x_min.shape != scale.shape:
        raise ValueError(f"x_min and scale must have the same shape, got {tuple(x_min.shape)} and {tuple(scale.shape)}")
    _same_device(x, x_min, scale)
    reference.check_bits(bits)
    return torch.ops.fq_plugin.fake_quantize_affine(x, x_min, scale, bits)


def int8_linear(x_q, x_scale, x_zero, w_q, w_scale, w_zero, w_sum, bias=None) -> torch.Tensor:
    """Linear layer on affine 8-bit codes (see :func:`fq_plugin.ops.reference.int8_linear` for the formula).

    Args:
        x_q: uint8 ``[M, K]``; x_scale, x_zero: float32 ``[M]`` or ``[1]``; w_q: int8 ``[N, K]``;
        w_scale, w_zero: float32 ``[N]``; w_sum: int32 ``[N]`` (= ``w_q.sum(1)``); bias: float32 ``[N]`` or None.
    Returns:
        float32 ``[M, N]``.
    """
    _tensor(x_q, "x_q", torch.uint8, 2)
    m, k = x_q.shape
    _check_k(k)
    _vector(x_scale, "x_scale", torch.float32, m, broadcast_ok=True)
    _vector(x_zero, "x_zero", torch.float32, m, broadcast_ok=True)
    _check_weights(w_q, "w_q", torch.int8, k, w_scale, bias,
                   ((w_zero, "w_zero", torch.float32), (w_sum, "w_sum", torch.int32)))
    _same_device(x_q, x_scale, x_zero, w_q, w_scale, w_zero, w_sum, bias)
    return torch.ops.fq_plugin.int8_linear(x_q, x_scale, x_zero, w_q, w_scale, w_zero, w_sum, bias)


def int8_linear_symmetric(x_q, x_scale, w_q, w_scale, w_zero, w_sum, bias=None) -> torch.Tensor:
    """Linear layer on symmetric int8 activations ``x = x_scale * x_q`` and affine int8 weights.

    Args:
        x_q: int8 ``[M, K]``; x_scale: float32 ``[M]`` or ``[1]``; the weights as in :func:`int8_linear`
        (``w_sum`` must equal ``w_q.sum(1)``: a kernel may use it).
    Returns:
        float32 ``[M, N]``.
    """
    _tensor(x_q, "x_q", torch.int8, 2)
    m, k = x_q.shape
    _check_k(k)
    _vector(x_scale, "x_scale", torch.float32, m, broadcast_ok=True)
    _check_weights(w_q, "w_q", torch.int8, k, w_scale, bias,
                   ((w_zero, "w_zero", torch.float32), (w_sum, "w_sum", torch.int32)))
    _same_device(x_q, x_scale, w_q, w_scale, w_zero, w_sum, bias)
    return torch.ops.fq_plugin.int8_linear_symmetric(x_q, x_scale, w_q, w_scale, w_zero, w_sum, bias)


def pack_signs(x) -> torch.Tensor:
    """Pack ``x > 0`` (bool: True) of ``x [M, K]`` into int32 ``[M, ceil(K/32)]`` (bit j of word w = column
    ``32 w + j``; padding bits 0).

    Args:
        x: float32 or bool ``[M, K]`` (other float dtypes are converted to float32).
    """
    if isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != torch.float32:
        x = x.float()
    if not isinstance(x, torch.Tensor) or x.dtype not in (torch.float32, torch.bool):
        raise TypeError(f"pack_signs expects a float or bool tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    _tensor(x, "x", None, 2)
    return torch.ops.fq_plugin.pack_signs(x)


def unpack_signs(bits, k: int) -> torch.Tensor:
    """float32 ``[M, k]`` of +1 (bit 1) / -1 (bit 0) from int32 ``[M, ceil(k/32)]`` words (for tests)."""
    _tensor(bits, "bits", torch.int32, 2)
    if bits.shape[1] != words_for(k):
        raise ValueError(f"bits must have {words_for(k)} words per row for K={k}, got shape {tuple(bits.shape)}")
    return reference.unpack_signs(bits, k)


def binary_linear_w1a8(x_q, x_scale, w_bits, w_scale, bias, k: int, planes: int = 1) -> torch.Tensor:
    """1-bit weights (packed signs) x int8 activations: ``x_scale*w_scale*sum_p sum_k sgn_p*x_q + bias``.

    Args:
        x_q: int8 ``[M, K]``; x_scale: float32 ``[M]`` or ``[1]``; w_bits: int32 ``[planes*N, ceil(K/32)]``
        (row ``p*N + n``: plane ``p`` of output ``n``); w_scale: float32 ``[N]``, shared by the planes of a row;
        bias: float32 ``[N]`` or None; k: K; planes: 1, or 2 for a ternary weight ``(sgn_0 + sgn_1) / 2``
        (its kernels run both planes in one pass).
    Returns:
        float32 ``[M, N]``.
    """
    _tensor(x_q, "x_q", torch.int8, 2)
    m = x_q.shape[0]
    if k != x_q.shape[1]:
        raise ValueError(f"K={k} does not match x_q with {x_q.shape[1]} columns")
    _check_k(k)
    if planes not in (1, 2):
        raise ValueError(f"planes must be 1 or 2, got {planes}")
    _vector(x_scale, "x_scale", torch.float32, m, broadcast_ok=True)
    _tensor(w_bits, "w_bits", torch.int32, 2)
    if w_bits.shape[0] % planes:
        raise ValueError(f"w_bits must have planes * N rows for planes={planes}, got shape {tuple(w_bits.shape)}")
    _check_weights(w_bits[: w_bits.shape[0] // planes], "w_bits", torch.int32, words_for(k), w_scale, bias)
    _same_device(x_q, x_scale, w_bits, w_scale, bias)
    return torch.ops.fq_plugin.binary_linear_w1a8(x_q, x_scale, w_bits, w_scale, bias, k, planes)


def binary_linear_w1a1(x_bits, x_scale, w_bits, w_scale, bias, k: int, unsigned: bool = False) -> torch.Tensor:
    """1-bit weights x 1-bit activations (xor/and + popcount), see :func:`fq_plugin.ops.reference.binary_linear_w1a1`.

    Args:
        x_bits: int32 ``[M, ceil(K/32)]``; x_scale: float32 ``[M]`` or ``[1]``; w_bits: int32
        ``[N, ceil(K/32)]``; w_scale: float32 ``[N]``; bias: float32 ``[N]`` or None; k: K (> 0);
        unsigned: activations in {0, 1} instead of {-1, +1}.
    Returns:
        float32 ``[M, N]``.
    """
    _tensor(x_bits, "x_bits", torch.int32, 2)
    if not isinstance(k, int) or k < 0 or x_bits.shape[1] != words_for(k):
        raise ValueError(f"x_bits must have ceil(K/32) = {words_for(k) if isinstance(k, int) and k >= 0 else '?'} "
                         f"words per row for K={k}, got shape {tuple(x_bits.shape)}")
    _vector(x_scale, "x_scale", torch.float32, x_bits.shape[0], broadcast_ok=True)
    _check_weights(w_bits, "w_bits", torch.int32, words_for(k), w_scale, bias)
    _same_device(x_bits, x_scale, w_bits, w_scale, bias)
    return torch.ops.fq_plugin.binary_linear_w1a1(x_bits, x_scale, w_bits, w_scale, bias, k, bool(unsigned))


def _grid(grid, name, buckets):
    if grid is None:
        return
    _tensor(grid, name, torch.float32, 2)
    if grid.shape[0] != 2 or grid.shape[1] not in (buckets, 1):
        raise ValueError(f"{name} must have shape [2, {buckets}] or [2, 1] (x_min, step size), got {tuple(grid.shape)}")


def _softmax_arguments(shape, mask, num_grid, den_grid, out_grid, bits):
    """Checks of the softmax arguments for scores of ``shape`` ``[B, H, T, S]``."""
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got {getattr(mask, 'dtype', type(mask).__name__)}")
    try:
        fits = mask.dim() <= 4 and torch.broadcast_shapes(mask.shape, shape) == shape
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to scores {tuple(shape)}")
    for grid, name in ((num_grid, "num_grid"), (den_grid, "den_grid"), (out_grid, "out_grid")):
        _grid(grid, name, shape[1])
    reference.check_bits(bits)


def quantized_softmax(scores, mask, num_grid=None, den_grid=None, out_grid=None, bits: int = 8) -> torch.Tensor:
    """Attention probabilities from quantized parts in one pass (inference; see
    :func:`fq_plugin.ops.reference.quantized_softmax`, which it matches up to the rounding of exp and the row sums).

    Args:
        scores: float32 ``[B, H, T, S]``; mask: bool broadcastable to it (True: masked key);
        num_grid, den_grid, out_grid: float32 ``[2, H]`` or ``[2, 1]`` or None; bits: 2..8.
    Returns:
        float32 ``[B, H, T, S]``. Raises ``ValueError`` when a quantized part holds NaN.
    """
    _tensor(scores, "scores", torch.float32, 4)
    _softmax_arguments(scores.shape, mask, num_grid, den_grid, out_grid, bits)
    _same_device(scores, mask, num_grid, den_grid, out_grid)
    return torch.ops.fq_plugin.quantized_softmax(scores, mask, num_grid, den_grid, out_grid, bits)


def quantized_attention(q, k, v, mask, heads: int, kv_grid=None, num_grid=None, den_grid=None, out_grid=None,
                        bits: int = 8, key_rows=None):
    """Attention of decoding queries in one pass (inference): ``q . k``, :func:`quantized_softmax`, ``probs . v``, with
    the keys and values in float32 or as 8-bit codes, and the hypotheses of a sentence sharing one row of them, or
    each key read from the row ``key_rows`` names (see :func:`fq_plugin.ops.reference.quantized_attention`, which it
    matches bit for bit).

    Args:
        q: float32 ``[B * heads, T, D]``; k, v: ``[Bk * heads, S, D]``, B a multiple of Bk, float32 or (with
        ``kv_grid`` float32 ``[2, 2]``) uint8; mask: bool broadcastable to ``[B, heads, T, S]``; num/den/out grids,
        bits: as :func:`quantized_softmax`; key_rows: None, or int64 ``[B, S]`` in ``[0, Bk)``: hypothesis b reads
        key and value j from row ``key_rows[b, j]`` (then B need not be a multiple of Bk).
    Returns:
        ``(out [T, B * heads, D], probs [B, heads, T, S])``. Raises ``ValueError`` when a quantized part holds NaN.
    """
    kv_dtype = torch.float32 if kv_grid is None else torch.uint8
    for t, name, dtype in ((q, "q", torch.float32), (k, "k", kv_dtype), (v, "v", kv_dtype)):
        _tensor(t, name, dtype, 3)
    if kv_grid is not None:
        _tensor(kv_grid, "kv_grid", torch.float32, 2)
        if kv_grid.shape != (2, 2):
            raise ValueError(f"kv_grid must have shape [2, 2] (x_min, step of k and v), got {tuple(kv_grid.shape)}")
    if not isinstance(heads, int) or heads < 1 or q.shape[0] % heads or k.shape[0] % heads:
        raise ValueError(f"q and k must have a multiple of heads={heads} rows, got {tuple(q.shape)}, {tuple(k.shape)}")
    rows, kv_rows = q.shape[0] // heads, k.shape[0] // heads
    if key_rows is not None:
        _tensor(key_rows, "key_rows", torch.int64, 2)
        if key_rows.shape != (rows, k.shape[1]):
            raise ValueError(f"key_rows must have shape [{rows}, {k.shape[1]}] (hypotheses, keys), got "
                             f"{tuple(key_rows.shape)}")
        if key_rows.numel() and not (0 <= int(key_rows.min()) and int(key_rows.max()) < kv_rows):
            raise ValueError(f"key_rows must index the {kv_rows} rows of k and v")
    if v.shape != k.shape or k.shape[2] != q.shape[2] or (
            key_rows is None and (rows % kv_rows if kv_rows else rows)):
        raise ValueError(f"k and v must have the shape [rows, S, {q.shape[2]}] with rows dividing the {q.shape[0]} "
                         f"rows of q; got k {tuple(k.shape)}, v {tuple(v.shape)}")
    if k.shape[1] == 0:
        raise ValueError("k must have at least one key")
    _softmax_arguments(torch.Size((rows, heads, q.shape[1], k.shape[1])), mask, num_grid, den_grid, out_grid, bits)
    _same_device(q, k, v, mask, kv_grid, num_grid, den_grid, out_grid, key_rows)
    return torch.ops.fq_plugin.quantized_attention(q, k, v, mask, heads, kv_grid, num_grid, den_grid, out_grid, bits,
                                                   key_rows)


def quantized_layer_norm(x, weight, bias, eps: float, num_grid=None, den_grid=None, quot_grid=None, out_grid=None,
                         bits: int = 8) -> torch.Tensor:
    """LayerNorm from quantized parts in one pass (inference; see :func:`fq_plugin.ops.reference.quantized_layer_norm`,
    which it matches up to the rounding of the row sums).

    Args:
        x: float32 ``[..., C]``; weight, bias: float32 ``[C]``; eps: float;
        num_grid, quot_grid, out_grid: float32 ``[2, C]`` or ``[2, 1]`` or None; den_grid: ``[2, 1]`` or None.
    Returns:
        float32 tensor shaped like ``x``. Raises ``ValueError`` when a quantized part holds NaN.
    """
    if not isinstance(x, torch.Tensor) or x.dtype != torch.float32 or x.dim() < 1:
        raise TypeError(f"x must be a float32 tensor with at least one dimension, got {x!r:.80}")
    c = x.shape[-1]
    _vector(weight, "weight", torch.float32, c)
    _vector(bias, "bias", torch.float32, c)
    for grid, name, buckets in ((num_grid, "num_grid", c), (den_grid, "den_grid", 1), (quot_grid, "quot_grid", c),
                                (out_grid, "out_grid", c)):
        _grid(grid, name, buckets)
    _same_device(x, weight, bias, num_grid, den_grid, quot_grid, out_grid)
    reference.check_bits(bits)
    return torch.ops.fq_plugin.quantized_layer_norm(x, weight, bias, float(eps), num_grid, den_grid, quot_grid,
                                                    out_grid, bits)
