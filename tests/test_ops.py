"""Low-bit ops: every kernel path against the pure-PyTorch reference, bad input, dispatch, CUDA sources."""
import contextlib
import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fq_plugin.ops as ops
from fq_plugin.ops import reference as ref
from fq_plugin.quant import fake_quantize

ROOT = Path(__file__).resolve().parent.parent
EPS = torch.finfo(torch.float32).eps
# (M, N, K): decoding batches (1..4), training/batched shapes, Transformer base/big sizes, odd sizes
SHAPES = [(1, 1, 1), (1, 7, 31), (3, 5, 33), (4, 64, 100), (64, 33, 257), (257, 9, 64), (2, 512, 512),
          (8, 16, 16), (13, 45, 77), (50, 1000, 130), (1, 1024, 1024), (3, 96, 2048), (5, 33, 4096), (4, 32000, 512)]
BINARY_SHAPES = SHAPES[:-1]  # the vocabulary projection stays 8-bit in binarized models
ISAS = ["portable", "avx2", "avx512-vnni"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@contextlib.contextmanager
def forced_path(name, int8_gemm="auto"):
    """Run on the registered reference op, or on one forced C++ CPU path (and int8 GEMM setting)."""
    if name == "reference":
        yield name
        return
    if not ops.extension_available():
        pytest.skip(f"C++ extension not loaded: {ops.backend_info()['cause']}")
    if name not in ops.backend_info()["cpu_paths"]:
        pytest.skip(f"this CPU cannot run the {name} path (has {ops.backend_info()['cpu_paths']})")
    before = ops.backend_info()
    ops.set_cpu_isa(name)
    ops.set_int8_gemm(int8_gemm)
    try:
        yield name
    finally:
        ops.set_cpu_isa(before["cpu"])
        ops.set_int8_gemm(before["int8_gemm"])


@pytest.fixture(params=["reference"] + ISAS)
def path(request):
    """The implementation under test: the registered reference op, or one forced C++ CPU path."""
    with forced_path(request.param) as name:
        yield name


@pytest.fixture(params=["reference"] + [f"{isa}/{gemm}" for isa in ISAS for gemm in ("kernels", "int_mm")])
def int8_path(request):
    """As ``path``, and who multiplies int8 matrices (int8 and W1A8 ops): our kernels, or torch._int_mm then the
    path's epilogue."""
    name, _, gemm = request.param.partition("/")
    with forced_path(name, gemm or "auto") as name:
        yield name


def run(path, fn, *args):
    """Call the op ``fn`` on ``path``. C++ paths run twice with output and scratch buffers poisoned with two
    different byte patterns (0xFF = NaN for floats): any element a kernel fails to write differs between them."""
    if path == "reference":
        return getattr(ref, fn.__name__)(*args)
    results = []
    for pattern in (0xFF, 0x5A):
        ops._ext.module()._set_debug_poison(pattern)
        try:
            results.append(fn(*args))
        finally:
            ops._ext.module()._set_debug_poison(-1)
    first, second = results
    for a, b in zip(first if isinstance(first, tuple) else (first,), second if isinstance(second, tuple) else (second,)):
        assert torch.equal(a, b), "output differs between poison patterns: some elements were never written"
    return first


def affine_operands(m, n, k, x_ranges=True):
    x_q = torch.randint(0, 256, (m, k), dtype=torch.uint8)
    w_q = torch.randint(-128, 128, (n, k), dtype=torch.int8)
    x_scale = torch.rand(m if x_ranges else 1) * 0.1 + 1e-3
    x_zero = torch.randn(m if x_ranges else 1)
    w_scale, w_zero = torch.rand(n) * 0.05 + 1e-4, torch.randn(n) * 0.1
    return x_q, x_scale, x_zero, w_q, w_scale, w_zero, w_q.sum(1, dtype=torch.int32), torch.randn(n)


def exact_dot(a, b):
    return a.to(torch.int64) @ b.to(torch.int64).t()


def assert_epilogue_close(out, expected, magnitude):
    """Float tolerance only for the float32 epilogue: a few ulps of the sum of the terms' magnitudes."""
    assert not torch.isnan(out).any()
    err = (out.double() - expected.double()).abs()
    bound = 8 * EPS * magnitude + 1e-30
    assert (err <= bound).all(), f"max excess {(err - bound).max().item():.3g}"


# ------------------------------------------------------------------------------------------------ int8 GEMM

@pytest.mark.parametrize("m,n,k", SHAPES)
def test_int8_linear_integer_part_is_exact(int8_path, m, n, k):
    x_q, _, _, w_q, *_ = affine_operands(m, n, k)
    out = run(int8_path, ops.int8_linear, x_q, torch.ones(1), torch.zeros(1), w_q, torch.ones(n), torch.zeros(n),
              w_q.sum(1, dtype=torch.int32), None)
    assert torch.equal(out, exact_dot(x_q, w_q).to(torch.float32))


@pytest.mark.parametrize("m,n,k", SHAPES)
@pytest.mark.parametrize("per_row", [True, False])
def test_int8_linear_matches_reference(int8_path, m, n, k, per_row):
    args = affine_operands(m, n, k, x_ranges=per_row)
    x_q, sx, zx, w_q, sw, zw, ws, bias = args
    out = run(int8_path, ops.int8_linear, *args)
    a = exact_dot(x_q, w_q).double()
    rx = x_q.double().sum(1, keepdim=True)
    sx, zx = sx.double()[:, None], zx.double()[:, None]
    sw, zw, ws, b = sw.double(), zw.double(), ws.double(), bias.double()
    exact = sx * sw * a + sx * zw * rx + zx * sw * ws + k * zx * zw + b
    mag = (sx * sw * a).abs() + (sx * zw * rx).abs() + (zx * sw * ws).abs() + (k * zx * zw).abs() + b.abs()
    assert_epilogue_close(out, exact, mag)
    # and it is the product of the dequantized operands
    deq = (sx * x_q.double() + zx) @ (sw[:, None] * w_q.double() + zw[:, None]).t() + b
    assert_epilogue_close(out, deq, mag)


@pytest.mark.parametrize("m,n,k", SHAPES)
def test_int8_linear_symmetric_matches_reference(int8_path, m, n, k):
    x_q = torch.randint(-128, 128, (m, k), dtype=torch.int8)
    w_q = torch.randint(-128, 128, (n, k), dtype=torch.int8)
    sx, sw, zw, bias = torch.rand(m) + 0.01, torch.rand(n) * 0.1, torch.randn(n) * 0.1, torch.randn(n)
    ws = w_q.sum(1, dtype=torch.int32)
    exact_int = run(int8_path, ops.int8_linear_symmetric, x_q, torch.ones(m), w_q, torch.ones(n), torch.zeros(n), ws,
                    None)
    assert torch.equal(exact_int, exact_dot(x_q, w_q).to(torch.float32))
    out = run(int8_path, ops.int8_linear_symmetric, x_q, sx, w_q, sw, zw, ws, bias)
    a, rx = exact_dot(x_q, w_q).double(), x_q.double().sum(1, keepdim=True)
    terms = (sx.double()[:, None] * sw.double() * a, sx.double()[:, None] * zw.double() * rx, bias.double())
    assert_epilogue_close(out, sum(terms), sum(t.abs() for t in terms))


# ------------------------------------------------------------------------------------------------ quantizers

@pytest.mark.parametrize("m,k", [(1, 1), (3, 33), (64, 257), (257, 100), (4, 4096)])
@pytest.mark.parametrize("bits", [8, 4, 2])
def test_quantize_affine_u8_bit_identical_to_fake_quantize(path, m, k, bits):
    x = torch.randn(m, k) * 3
    x[0, 0] = float("inf")
    if m > 1:
        x[1, -1] = float("-inf")
    lo, hi = torch.randn(m) - 2, torch.randn(m) + 2
    if m > 2:
        hi[2] = lo[2]  # a zero range
    codes = run(path, ops.quantize_affine_u8, x, lo, hi, bits)
    assert codes.dtype == torch.uint8 and codes.shape == x.shape
    assert torch.equal(codes, ref.quantize_affine_u8(x, lo, hi, bits))
    scale = torch.where(hi > lo, (hi - lo) / (2**bits - 1), torch.ones_like(hi))[:, None]
    fq = fake_quantize(x, lo[:, None], hi[:, None], bits)
    assert torch.equal(torch.addcmul(lo[:, None], codes.float(), scale), fq)
    one = run(path, ops.quantize_affine_u8, x, lo[:1], hi[:1], bits)  # one range for all rows
    assert torch.equal(one, ref.quantize_affine_u8(x, lo[:1].expand(m).contiguous(), hi[:1].expand(m).contiguous(),
                                                   bits))


@pytest.mark.parametrize("shape", [(1, 1), (5, 7, 130), (3, 129), (257, 128), (0, 4), (2, 3, 0)])
@pytest.mark.parametrize("per_feature", [True, False])
@pytest.mark.parametrize("bits", [8, 4, 2])
def test_fake_quantize_affine_bit_identical_to_fake_quantize(path, shape, per_feature, bits):
    x = torch.randn(*shape) * 3
    if x.numel() > 2:
        x.view(-1)[0], x.view(-1)[1] = float("inf"), float("-inf")
    n = shape[-1] if per_feature else 1
    lo, hi = torch.randn(n) - 2, torch.randn(n) + 2
    if n > 1:
        hi[1] = lo[1]  # a zero range
    scale = torch.where(hi > lo, (hi - lo) / (2**bits - 1), torch.ones_like(hi))
    out = run(path, ops.fake_quantize_affine, x, lo, scale, bits)
    assert out.shape == x.shape and torch.equal(out, fake_quantize(x, lo, hi, bits))


def test_fake_quantize_affine_rejects_nan_and_bad_ranges(path):
    x = torch.randn(4, 40)
    x[2, 33] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        run(path, ops.fake_quantize_affine, x, torch.zeros(40), torch.ones(40), 8)
    with pytest.raises(ValueError, match=r"x_min must have shape \[40\] or \[1\]"):
        ops.fake_quantize_affine(x, torch.zeros(4), torch.ones(4))
    with pytest.raises(ValueError, match="same shape"):
        ops.fake_quantize_affine(x, torch.zeros(1), torch.ones(40))
    with pytest.raises(ValueError, match="bit width"):
        ops.fake_quantize_affine(x, torch.zeros(1), torch.ones(1), 1)


def test_quantize_affine_u8_rounds_half_to_even(path):
    x = torch.arange(0, 256, dtype=torch.float32).sub(0.5).clamp(min=0).reshape(4, 64)  # exact ties .5
    codes = run(path, ops.quantize_affine_u8, x, torch.zeros(1), torch.full((1,), 255.0), 8)
    assert torch.equal(codes, torch.round(x).to(torch.uint8))
    assert codes[0, 1].item() == 0 and codes[0, 2].item() == 2  # 0.5 -> 0, 1.5 -> 2


def test_quantize_affine_u8_zero_range_rows(path):
    x = torch.full((3, 40), 0.7)
    codes = run(path, ops.quantize_affine_u8, x, torch.full((3,), 0.7), torch.full((3,), 0.7), 8)
    assert torch.equal(codes, torch.zeros(3, 40, dtype=torch.uint8))


@pytest.mark.parametrize("m,k", [(1, 1), (3, 33), (64, 257), (257, 100), (4, 4096)])
def test_quantize_absmax_i8_matches_reference(path, m, k):
    x = torch.randn(m, k) * 4
    if m > 1:
        x[1] = 0  # zero row: codes 0, scale 0
    codes, scale = run(path, ops.quantize_absmax_i8, x)
    want_codes, want_scale = ref.quantize_absmax_i8(x)
    assert torch.equal(codes, want_codes) and torch.equal(scale, want_scale)
    assert codes.abs().max() <= 127 and (codes.abs().amax(1) == 127).sum() == (x.abs().amax(1) > 0).sum()
    torch.testing.assert_close(scale[:, None] * codes.float(), x, atol=scale.max().item() / 2 + 1e-6, rtol=0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_input_raises(path, bad):
    x = torch.randn(4, 70)
    x[2, 65] = bad
    with pytest.raises(ValueError, match="finite"):
        run(path, ops.quantize_absmax_i8, x)
    if bad != bad:
        with pytest.raises(ValueError, match="NaN"):
            run(path, ops.quantize_affine_u8, x, torch.zeros(1), torch.ones(1), 8)
        with pytest.raises(ValueError, match="NaN"):
            run(path, ops.quantize_affine_u8, x[:, :3].contiguous(), torch.zeros(4), torch.tensor([1, 2, bad, 3.0]), 8)


# ------------------------------------------------------------------------------------------------ binary

@pytest.mark.parametrize("m,k", [(1, 1), (3, 31), (2, 32), (5, 33), (64, 100), (257, 257), (2, 4096)])
def test_pack_signs_round_trip(path, m, k):
    x = torch.randn(m, k)
    x[0, 0] = 0.0  # zero is not positive
    bits = run(path, ops.pack_signs, x)
    assert bits.dtype == torch.int32 and bits.shape == (m, (k + 31) // 32)
    assert torch.equal(bits, ref.pack_signs(x))
    assert torch.equal(ops.unpack_signs(bits, k), torch.where(x > 0, 1.0, -1.0))
    assert torch.equal(run(path, ops.pack_signs, x > 0), bits)
    if k % 32:
        assert ((bits[:, -1].long() & 0xFFFFFFFF) >> (k % 32)).eq(0).all()  # padding bits are 0
    assert torch.equal(ops.pack_signs(x.double()), bits)  # other float dtypes are converted


@pytest.mark.parametrize("m,n,k", BINARY_SHAPES)
def test_binary_linear_w1a8_matches_reference(int8_path, m, n, k):
    x_q = torch.randint(-128, 128, (m, k), dtype=torch.int8)
    w = torch.randn(n, k)
    w_bits = ref.pack_signs(w)
    exact = exact_dot(x_q, torch.where(w > 0, 1, -1))
    out_int = run(int8_path, ops.binary_linear_w1a8, x_q, torch.ones(1), w_bits, torch.ones(n), None, k)
    assert torch.equal(out_int, exact.to(torch.float32))
    sx, sw, bias = torch.rand(m) + 0.01, torch.rand(n) + 0.01, torch.randn(n)
    out = run(int8_path, ops.binary_linear_w1a8, x_q, sx, w_bits, sw, bias, k)
    terms = (sx.double()[:, None] * sw.double() * exact.double(), bias.double())
    assert_epilogue_close(out, sum(terms), sum(t.abs() for t in terms))


@pytest.mark.parametrize("m,n,k", BINARY_SHAPES)
def test_binary_linear_w1a8_two_planes_match_reference(int8_path, m, n, k):
    """planes=2 (a ternary weight as two sign planes with one scale per row): the dots of both planes are summed
    before the epilogue, on every path; the AVX2 batched kernel runs them as one panel of {-1, 0, 1} bytes."""
    x_q = torch.randint(-128, 128, (m, k), dtype=torch.int8)
    t = torch.randint(-1, 2, (n, k))
    w_bits = torch.cat([ref.pack_signs(t >= 0), ref.pack_signs(t > 0)])  # (s1 + s2) / 2 = t
    exact = 2 * exact_dot(x_q, t)
    out_int = run(int8_path, ops.binary_linear_w1a8, x_q, torch.ones(1), w_bits, torch.ones(n), None, k, 2)
    assert torch.equal(out_int, exact.to(torch.float32))
    sx, sw, bias = torch.rand(m) + 0.01, torch.rand(n) + 0.01, torch.randn(n)
    out = run(int8_path, ops.binary_linear_w1a8, x_q, sx, w_bits, sw, bias, k, 2)
    terms = (sx.double()[:, None] * sw.double() * exact.double(), bias.double())
    assert_epilogue_close(out, sum(terms), sum(t.abs() for t in terms))
    # Planes that are not a ternary weight (split binary: independent signs) are summed all the same.
    w_bits = ref.pack_signs(torch.randn(2 * n, k))
    signs = torch.where(ref.unpack_signs(w_bits, k) > 0, 1, -1)
    out = run(int8_path, ops.binary_linear_w1a8, x_q, torch.ones(1), w_bits, torch.ones(n), None, k, 2)
    assert torch.equal(out, exact_dot(x_q, signs[:n] + signs[n:]).to(torch.float32))


@pytest.mark.parametrize("call", ["public", "op"])
def test_binary_linear_w1a8_refuses_bad_plane_counts(call):
    """The Python checks and, called directly, the C++ op."""
    if call == "op" and not ops.extension_available():
        pytest.skip(f"C++ extension not loaded: {ops.backend_info()['cause']}")
    fn = ops.binary_linear_w1a8 if call == "public" else torch.ops.fq_plugin.binary_linear_w1a8
    x_q, w_bits = torch.zeros(2, 40, dtype=torch.int8), ref.pack_signs(torch.randn(6, 40))
    with pytest.raises(ValueError, match="planes must be 1 or 2"):
        fn(x_q, torch.ones(2), w_bits, torch.ones(2), None, 40, 3)
    with pytest.raises(ValueError, match="planes \\* N rows"):
        fn(x_q, torch.ones(2), w_bits[:5], torch.ones(2), None, 40, 2)
    with pytest.raises(ValueError, match="w_scale"):  # two planes of 3 rows need 3 scales
        fn(x_q, torch.ones(2), w_bits, torch.ones(6), None, 40, 2)


@pytest.mark.parametrize("x_value", [127, -128])
def test_binary_linear_w1a8_extreme_values_do_not_overflow(int8_path, x_value):
    """Largest partial sums: every activation at one end of int8, long rows of equal signs (the AVX2 kernel sums
    products in 16-bit lanes for a while before widening), enough rows for every kernel's batched path."""
    m, n, k = 9, 40, 4096
    x_q = torch.full((m, k), x_value, dtype=torch.int8)
    x_q[1::2, 1::3] = -1 - x_value  # the other end in some rows
    w = torch.ones(n, k)
    w[n // 2:] = -1
    w[3, ::5] = -1
    out = run(int8_path, ops.binary_linear_w1a8, x_q, torch.ones(1), ref.pack_signs(w), torch.ones(n), None, k)
    assert torch.equal(out, exact_dot(x_q, w.long()).to(torch.float32))
    t = w.clone()
    t[:, 1::7] = 0  # ternary: panels of {-1, 0, 1} bytes, the same 16-bit bound
    planes = torch.cat([ref.pack_signs(t >= 0), ref.pack_signs(t > 0)])
    out = run(int8_path, ops.binary_linear_w1a8, x_q, torch.ones(1), planes, torch.ones(n), None, k, 2)
    assert torch.equal(out, 2 * exact_dot(x_q, t.long()).to(torch.float32))


@pytest.mark.parametrize("m,n,k", BINARY_SHAPES)
@pytest.mark.parametrize("unsigned", [False, True])
def test_binary_linear_w1a1_matches_reference(path, m, n, k, unsigned):
    x, w = torch.randn(m, k), torch.randn(n, k)
    x_bits, w_bits = ref.pack_signs(x), ref.pack_signs(w)
    xv = (x > 0).long() if unsigned else torch.where(x > 0, 1, -1)
    exact = exact_dot(xv, torch.where(w > 0, 1, -1))
    out_int = run(path, ops.binary_linear_w1a1, x_bits, torch.ones(m), w_bits, torch.ones(n), None, k, unsigned)
    assert torch.equal(out_int, exact.to(torch.float32))
    sx, sw, bias = torch.rand(1) + 0.01, torch.rand(n) + 0.01, torch.randn(n)
    out = run(path, ops.binary_linear_w1a1, x_bits, sx, w_bits, sw, bias, k, unsigned)
    terms = (sx.double()[:, None] * sw.double() * exact.double(), bias.double())
    assert_epilogue_close(out, sum(terms), sum(t.abs() for t in terms))


def test_binary_ops_refuse_nonzero_padding_bits(path):
    x_bits, w_bits = ref.pack_signs(torch.randn(2, 40)), ref.pack_signs(torch.randn(3, 40))
    dirty = w_bits.clone()
    dirty[1, -1] |= 1 << 20  # bit of column 52 > K
    with pytest.raises(ValueError, match="padding bits"):
        run(path, ops.binary_linear_w1a1, x_bits, torch.ones(2), dirty, torch.ones(3), None, 40)
    with pytest.raises(ValueError, match="padding bits"):
        run(path, ops.binary_linear_w1a8, torch.zeros(2, 40, dtype=torch.int8), torch.ones(2), dirty, torch.ones(3),
            None, 40)


def test_ternary_pack_round_trip():
    for n, k in [(1, 1), (3, 5), (7, 64), (4, 1023)]:
        t = torch.randint(-1, 2, (n, k), dtype=torch.int8)
        packed = ops.pack_ternary(t)
        assert packed.dtype == torch.uint8 and packed.shape == (n, (k + 3) // 4)
        assert torch.equal(ops.unpack_ternary(packed, k), t)
    with pytest.raises(ValueError, match="-1, 0, 1"):
        ops.pack_ternary(torch.tensor([[2]], dtype=torch.int8))
    with pytest.raises(TypeError, match="int8"):
        ops.pack_ternary(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="code 3"):
        ops.unpack_ternary(torch.full((1, 1), 3, dtype=torch.uint8), 4)


# ------------------------------------------------------------------------------------------------ bad input

# ---------------------------------------------------------------------------------------------------------
# softmax and LayerNorm from quantized parts (inference ops)

@pytest.fixture(params=["reference", "extension"])
def parts_path(request):
    """These ops have one C++ implementation (no ISA variants): the reference op or the extension."""
    if request.param == "extension" and not ops.extension_available():
        pytest.skip(f"C++ extension not loaded: {ops.backend_info()['cause']}")
    return request.param


def grid(n, lo, hi, bits=8):
    """A frozen grid [2, n] as ActivationQuantizer.inference_grid builds it; bucket 0 gets a zero range."""
    lo = torch.full((n,), float(lo)) - torch.rand(n) * 0.1
    hi = torch.full((n,), float(hi)) + torch.rand(n) * 0.1
    hi[0] = lo[0]
    return torch.stack([lo, torch.where(hi > lo, (hi - lo) / (2**bits - 1), torch.ones_like(hi))])


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (4, 4, 1, 7), (3, 8, 5, 5), (2, 4, 6, 33), (64, 8, 1, 40),
                                   (8, 8, 30, 31), (0, 4, 1, 5)])
@pytest.mark.parametrize("grids", ["per_head", "single", "some", "none"])
@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_softmax_is_bit_identical_to_reference(parts_path, shape, grids, bits):
    b, h, t, s = shape
    scores = torch.randn(shape) * 4
    mask = torch.rand(b, 1, t, s) < 0.3
    if b and t and s:
        mask[0, :, 0] = True  # a query whose every key is masked
        if grids in ("per_head", "single"):
            scores[-1, -1, -1, -1] = float("inf")  # saturates the quantized parts (float ones would give inf/inf)
    n = h if grids == "per_head" else 1
    num, den, out = grid(n, 0, 1, bits), grid(n, 0.5, max(s, 1), bits), grid(n, 0, 1, bits)
    if grids == "some":
        num, out = None, None
    elif grids == "none":
        num = den = out = None
    probs = run(parts_path, ops.quantized_softmax, scores, mask, num, den, out, bits)
    expected = ref.quantized_softmax(scores, mask, num, den, out, bits)
    assert probs.shape == scores.shape and not torch.isnan(probs).any()
    assert torch.equal(probs[mask.expand_as(probs)], torch.zeros(int(mask.expand_as(probs).sum())))
    assert torch.equal(probs, expected)
    if grids == "none" and probs.numel():  # rows with a real key and no infinite score: plain softmax
        plain = torch.softmax(scores.masked_fill(mask, float("-inf")), -1)
        rows = (~mask.all(-1, keepdim=True) & ~torch.isinf(scores).any(-1, keepdim=True)).expand_as(probs)
        assert torch.allclose(probs[rows], plain[rows], atol=1e-6)


def test_quantized_softmax_nan_and_bad_arguments(parts_path):
    scores, mask = torch.randn(2, 4, 3, 5), torch.zeros(2, 1, 1, 5, dtype=torch.bool)
    mask[1, 0, 0, 2] = True
    scores[1, 0, 0, 2] = float("nan")  # masked: ignored, as fairseq's masking replaces it
    run(parts_path, ops.quantized_softmax, scores, mask, grid(4, 0, 1), None, None, 8)
    scores[0, 3, 2, 4] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        run(parts_path, ops.quantized_softmax, scores, mask, grid(4, 0, 1), None, None, 8)
    good = (torch.randn(2, 4, 3, 5), mask, grid(4, 0, 1), None, None, 8)
    for index, value, exc, match in [(1, mask.int(), TypeError, "bool"),
                                     (1, torch.zeros(3, 1, 1, 5, dtype=torch.bool), ValueError, "broadcast"),
                                     (2, grid(3, 0, 1), ValueError, r"\[2, 4\] or \[2, 1\]"),
                                     (4, torch.zeros(4), ValueError, "2-D"), (5, 9, ValueError, "bit width"),
                                     (0, torch.randn(2, 4, 5), ValueError, "4-D")]:
        args = list(good)
        args[index] = value
        with pytest.raises(exc, match=match):
            ops.quantized_softmax(*args)


# (hypotheses B, key rows Bk, heads, T, S, D): a sentence's 4 beam hypotheses sharing one row of encoder keys, the
# base shapes at batch 64 x beam 4, several queries, D not a multiple of the 16 lanes, an empty batch
ATTENTION_SHAPES = [(1, 1, 1, 1, 1, 1), (4, 1, 8, 1, 21, 64), (8, 2, 4, 1, 7, 64), (256, 256, 8, 1, 30, 64),
                    (256, 64, 8, 1, 21, 64), (3, 3, 2, 5, 9, 37), (4, 1, 2, 3, 40, 130), (0, 0, 4, 1, 5, 16)]


def attention_operands(shape, kv):
    """q, k, v, kv_grid: float keys and values, or 8-bit codes with x_min and step of k and v."""
    b, bk, h, t, s, d = shape
    q = torch.randn(b * h, t, d)
    if kv == "float":
        return q, torch.randn(bk * h, s, d), torch.randn(bk * h, s, d), None
    codes = [torch.randint(0, 256, (bk * h, s, d), dtype=torch.uint8) for _ in range(2)]
    return (q, *codes, torch.tensor([[-1.3, -0.6], [0.01, 0.005]]))


@pytest.mark.parametrize("shape", ATTENTION_SHAPES)
@pytest.mark.parametrize("kv", ["float", "codes"])
@pytest.mark.parametrize("grids", ["per_head", "none"])
def test_quantized_attention_is_bit_identical_to_reference(path, shape, kv, grids):
    b, bk, h, t, s, d = shape
    q, k, v, kv_grid = attention_operands(shape, kv)
    mask = torch.rand(b, 1, t, s) < 0.3
    if b:
        mask[0, :, 0] = True  # a query whose every key is masked
    softmax = (grid(h, 0, 1), grid(h, 0.5, s), grid(h, 0, 1)) if grids == "per_head" else (None,) * 3
    out, probs = run(path, ops.quantized_attention, q, k, v, mask, h, kv_grid, *softmax, 8)
    expected_out, expected_probs = ref.quantized_attention(q, k, v, mask, h, kv_grid, *softmax, 8)
    assert out.shape == (t, b * h, d) and probs.shape == (b, h, t, s)
    assert torch.equal(out, expected_out) and torch.equal(probs, expected_probs)
    if kv == "codes":  # codes read as the quantizer's values
        k, v = (torch.addcmul(kv_grid[0, i], c.float(), kv_grid[1, i]) for i, c in enumerate((k, v)))
        assert torch.equal(run(path, ops.quantized_attention, q, k, v, mask, h, None, *softmax, 8)[0], out)
    if grids == "none" and b:  # plain attention, every hypothesis reading its sentence's keys
        rows = torch.arange(b * h)
        kv_row = rows // (h * (b // bk)) * h + rows % h
        scores = torch.bmm(q, k[kv_row].transpose(1, 2)).view(b, h, t, s).masked_fill(mask, float("-inf"))
        plain = torch.softmax(scores, -1).nan_to_num(0.0)
        torch.testing.assert_close(probs, plain, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out, torch.bmm(plain.view(b * h, t, s), v[kv_row]).transpose(0, 1),
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 1, 1), (256, 256, 8, 1, 30, 64), (6, 9, 2, 1, 13, 37),
                                   (3, 4, 2, 2, 5, 16), (0, 2, 4, 1, 3, 16)])
@pytest.mark.parametrize("kv", ["float", "codes"])
def test_quantized_attention_reads_each_key_from_the_row_key_rows_names(path, shape, kv):
    """A decoding cache that beam search does not reorder: hypothesis b reads key j from row key_rows[b, j] of keys
    held in a longer buffer (a strided view); the same as attention over those keys gathered in one tensor."""
    b, bk, h, t, s, d = shape
    q, k, v, kv_grid = attention_operands((b, bk, h, t, s + 7, d), kv)  # 7 unused positions past the keys
    k, v = k[:, :s], v[:, :s]
    key_rows = torch.randint(0, bk, (b, s))
    mask = torch.rand(b, 1, t, s) < 0.3
    softmax = (grid(h, 0, 1), grid(h, 0.5, s), grid(h, 0, 1))
    out, probs = run(path, ops.quantized_attention, q, k, v, mask, h, kv_grid, *softmax, 8, key_rows)
    gathered = [ref.gather_key_rows(x, key_rows, h) for x in (k, v)]
    expected_out, expected_probs = ref.quantized_attention(q, *gathered, mask, h, kv_grid, *softmax, 8)
    assert out.shape == (t, b * h, d) and probs.shape == (b, h, t, s)
    assert torch.equal(out, expected_out) and torch.equal(probs, expected_probs)
    if b:
        by_row = k.reshape(bk, h, s, d)
        assert torch.equal(gathered[0].view(b, h, s, d)[-1, :, -1], by_row[key_rows[-1, -1], :, -1])


def test_quantized_attention_nan_and_bad_arguments(parts_path):
    q, k, v, kv_grid = attention_operands((4, 2, 2, 1, 5, 16), "codes")
    mask = torch.zeros(4, 1, 1, 5, dtype=torch.bool)
    softmax = (grid(2, 0, 1), None, None)
    q[3, 0, 7] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        run(parts_path, ops.quantized_attention, q, k, v, mask, 2, kv_grid, *softmax, 8)
    good = (torch.randn(8, 1, 16), k, v, mask, 2, kv_grid, *softmax, 8)
    for index, value, exc, match in [(1, k.float(), TypeError, "uint8"), (5, None, TypeError, "float32"),
                                     (5, torch.zeros(2, 1), ValueError, r"\[2, 2\]"),
                                     (1, k[:2].clone(), ValueError, "shape"), (4, 3, ValueError, "heads=3"),
                                     (0, torch.randn(6, 1, 16), ValueError, "dividing"),
                                     (1, k[:, :0].clone(), ValueError, "shape|one key"),
                                     (3, torch.zeros(3, 1, 1, 5, dtype=torch.bool), ValueError, "broadcast"),
                                     (9, 1, ValueError, "bit width"), (10, torch.zeros(4, 5), TypeError, "int64"),
                                     (10, torch.zeros(4, 4, dtype=torch.long), ValueError, r"shape \[4, 5\]"),
                                     (10, torch.full((4, 5), 2), ValueError, "index the 2 rows")]:
        args = list(good) + [None]
        args[index] = value
        with pytest.raises(exc, match=match):
            ops.quantized_attention(*args)
    if parts_path != "reference":  # the op itself checks what it reads
        with pytest.raises(ValueError, match="index the 2 rows"):
            torch.ops.fq_plugin.quantized_attention(*good, torch.full((4, 5), -1))


@pytest.mark.parametrize("shape", [(1, 1), (5, 7, 130), (3, 512), (4, 1, 128), (30, 64, 512), (0, 4), (2, 3, 1)])
@pytest.mark.parametrize("grids", ["per_feature", "single", "some", "none"])
@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_layer_norm_is_bit_identical_to_reference(parts_path, shape, grids, bits):
    c = shape[-1]
    x = torch.randn(shape) * 3 + 1
    weight, bias = torch.randn(c), torch.randn(c)
    n = c if grids == "per_feature" else 1
    num, den, quot, out = grid(n, -6, 6, bits), grid(1, 0.5, 4, bits), grid(n, -3, 3, bits), grid(n, -5, 5, bits)
    if grids == "some":
        den, out = None, None
    elif grids == "none":
        num = den = quot = out = None
    y = run(parts_path, ops.quantized_layer_norm, x, weight, bias, 1e-5, num, den, quot, out, bits)
    assert y.shape == x.shape and not torch.isnan(y).any()
    assert torch.equal(y, ref.quantized_layer_norm(x, weight, bias, 1e-5, num, den, quot, out, bits))
    if grids == "none":
        assert torch.allclose(y, torch.nn.functional.layer_norm(x, (c,), weight, bias, 1e-5), atol=1e-5)


def test_quantized_layer_norm_nan_inf_and_bad_arguments(parts_path):
    weight, bias, num = torch.ones(6), torch.zeros(6), grid(6, -3, 3)
    for bad in (float("nan"), float("inf")):  # an Inf makes the centred row NaN
        x = torch.randn(3, 6)
        x[1, 2] = bad
        with pytest.raises(ValueError, match="NaN"):
            run(parts_path, ops.quantized_layer_norm, x, weight, bias, 1e-5, num, None, None, None, 8)
    good = (torch.randn(3, 6), weight, bias, 1e-5, num, None, None, None, 8)
    for index, value, exc, match in [(0, torch.randn(3, 6).double(), TypeError, "float32"),
                                     (1, torch.ones(5), ValueError, r"weight must have shape \[6\]"),
                                     (5, grid(6, 0, 1), ValueError, r"den_grid must have shape \[2, 1\]"),
                                     (6, grid(3, 0, 1), ValueError, r"quot_grid must have shape \[2, 6\]"),
                                     (8, 1, ValueError, "bit width")]:
        args = list(good)
        args[index] = value
        with pytest.raises(exc, match=match):
            ops.quantized_layer_norm(*args)


def _good_int8(m=3, n=4, k=8):
    return list(affine_operands(m, n, k))


@pytest.mark.parametrize("index,value,exc,match", [
    (0, torch.zeros(3, 8, dtype=torch.int8), TypeError, "x_q must be torch.uint8"),
    (0, torch.zeros(3, 8, 1, dtype=torch.uint8), ValueError, "x_q must be 2-D"),
    (1, torch.ones(2), ValueError, r"x_scale must have shape \[3\] or \[1\]"),
    (2, torch.zeros(3, dtype=torch.float64), TypeError, "x_zero must be torch.float32"),
    (3, torch.zeros(4, 8, dtype=torch.uint8), TypeError, "w_q must be torch.int8"),
    (3, torch.zeros(4, 9, dtype=torch.int8), ValueError, "w_q must have 8 columns"),
    (4, torch.ones(5), ValueError, r"w_scale must have shape \[4\]"),
    (6, torch.zeros(4, dtype=torch.int64), TypeError, "w_sum must be torch.int32"),
    (7, torch.zeros(3), ValueError, r"bias must have shape \[4\]"),
    (3, [[1]], TypeError, "w_q must be a torch.Tensor"),
])
def test_int8_linear_bad_arguments(index, value, exc, match):
    args = _good_int8()
    args[index] = value
    with pytest.raises(exc, match=match):
        ops.int8_linear(*args)


def test_other_ops_bad_arguments():
    with pytest.raises(TypeError, match="x must be torch.float32"):
        ops.quantize_affine_u8(torch.zeros(2, 3, dtype=torch.float64), torch.zeros(1), torch.ones(1))
    with pytest.raises(ValueError, match="bit width"):
        ops.quantize_affine_u8(torch.zeros(2, 3), torch.zeros(1), torch.ones(1), bits=9)
    with pytest.raises(ValueError, match=r"x_max must have shape \[2\] or \[1\]"):
        ops.quantize_affine_u8(torch.zeros(2, 3), torch.zeros(2), torch.ones(3))
    with pytest.raises(ValueError, match="x must be 2-D"):
        ops.quantize_absmax_i8(torch.zeros(3))
    with pytest.raises(TypeError, match="float or bool"):
        ops.pack_signs(torch.zeros(2, 3, dtype=torch.int32))
    with pytest.raises(TypeError, match="x_q must be torch.int8"):
        ops.int8_linear_symmetric(torch.zeros(2, 3, dtype=torch.uint8), torch.ones(2), torch.zeros(4, 3, dtype=torch.int8),
                                  torch.ones(4), torch.zeros(4), torch.zeros(4, dtype=torch.int32))
    bits = torch.zeros(2, 2, dtype=torch.int32)
    with pytest.raises(ValueError, match="does not match x_q"):
        ops.binary_linear_w1a8(torch.zeros(2, 40, dtype=torch.int8), torch.ones(2), bits, torch.ones(2), None, 41)
    with pytest.raises(ValueError, match="w_bits must have 2 columns"):
        ops.binary_linear_w1a8(torch.zeros(2, 40, dtype=torch.int8), torch.ones(2), bits[:, :1].contiguous(),
                               torch.ones(2), None, 40)
    with pytest.raises(ValueError, match="ceil"):
        ops.binary_linear_w1a1(bits, torch.ones(2), bits, torch.ones(2), None, 65)
    with pytest.raises(TypeError, match="x_bits must be torch.int32"):
        ops.binary_linear_w1a1(bits.float(), torch.ones(2), bits, torch.ones(2), None, 64)
    with pytest.raises(ValueError, match="exceeds"):
        ops.int8_linear_symmetric(torch.zeros(1, ref.MAX_K + 1, dtype=torch.int8), torch.ones(1),
                                  torch.zeros(1, ref.MAX_K + 1, dtype=torch.int8), torch.ones(1), torch.zeros(1),
                                  torch.zeros(1, dtype=torch.int32))


def test_cpp_kernels_check_arguments_too():
    """Direct ``torch.ops`` calls (skipping the Python checks) still get clear errors from the C++ side."""
    if not ops.extension_available():
        pytest.skip(f"C++ extension not loaded: {ops.backend_info()['cause']}")
    args = _good_int8()
    args[3] = torch.zeros(4, 9, dtype=torch.int8)
    with pytest.raises(ValueError, match="w_q must have 8 columns"):
        torch.ops.fq_plugin.int8_linear(*args)
    with pytest.raises(TypeError, match="x_q must be"):
        torch.ops.fq_plugin.binary_linear_w1a8(torch.zeros(2, 3), torch.ones(2), torch.zeros(2, 1, dtype=torch.int32),
                                               torch.ones(2), None, 3)


# ------------------------------------------------------------------------------------------------ dispatch

def test_schemas_of_extension_match_python_fallback():
    if not ops.extension_available():
        pytest.skip(f"C++ extension not loaded: {ops.backend_info()['cause']}")
    for name, schema in ops.SCHEMAS.items():
        assert str(getattr(torch.ops.fq_plugin, name).default._schema) == f"fq_plugin::{schema}"


def test_extension_is_loaded_when_built():
    built = glob.glob(str(ROOT / "fq_plugin" / "_C*.so"))
    if not built or os.environ.get("FQ_PLUGIN_DISABLE_EXT"):
        pytest.skip("no fq_plugin/_C*.so in the checkout")
    info = ops.backend_info()
    assert info["extension"], info["cause"]
    assert info["cpu"] == info["cpu_paths"][-1], "the best path this CPU supports is the default"
    assert "portable" in info["cpu_paths"]


def test_opcheck():
    x_q, sx, zx, w_q, sw, zw, ws, bias = affine_operands(3, 5, 40)
    torch.library.opcheck(torch.ops.fq_plugin.int8_linear.default, (x_q, sx, zx, w_q, sw, zw, ws, bias),
                          test_utils=("test_schema", "test_faketensor"))
    bits = ref.pack_signs(torch.randn(3, 40))
    torch.library.opcheck(torch.ops.fq_plugin.binary_linear_w1a1.default,
                          (bits, sx, ref.pack_signs(torch.randn(5, 40)), sw, None, 40, True),
                          test_utils=("test_schema", "test_faketensor"))
    torch.library.opcheck(torch.ops.fq_plugin.quantize_absmax_i8.default, (torch.randn(3, 7),),
                          test_utils=("test_schema", "test_faketensor"))
    torch.library.opcheck(torch.ops.fq_plugin.fake_quantize_affine.default,
                          (torch.randn(2, 3, 7), torch.zeros(7), torch.full((7,), 0.1), 8),
                          test_utils=("test_schema", "test_faketensor"))
    torch.library.opcheck(torch.ops.fq_plugin.quantized_softmax.default,
                          (torch.randn(2, 4, 3, 5), torch.zeros(2, 1, 1, 5, dtype=torch.bool), grid(4, 0, 1), None,
                           grid(1, 0, 1), 8), test_utils=("test_schema", "test_faketensor"))
    q, k, v, kv_grid = attention_operands((4, 2, 2, 1, 5, 16), "codes")
    torch.library.opcheck(torch.ops.fq_plugin.quantized_attention.default,
                          (q, k, v, torch.zeros(1, 1, 1, 5, dtype=torch.bool), 2, kv_grid, grid(2, 0, 1), None, None,
                           8), test_utils=("test_schema", "test_faketensor"))
    torch.library.opcheck(torch.ops.fq_plugin.quantized_attention.default,
                          (q, k, v, torch.zeros(1, 1, 1, 5, dtype=torch.bool), 2, kv_grid, grid(2, 0, 1), None, None,
                           8, torch.randint(0, 2, (4, 5))), test_utils=("test_schema", "test_faketensor"))
    torch.library.opcheck(torch.ops.fq_plugin.quantized_layer_norm.default,
                          (torch.randn(2, 3, 7), torch.ones(7), torch.zeros(7), 1e-5, grid(7, -3, 3), grid(1, 0.5, 2),
                           None, None, 8), test_utils=("test_schema", "test_faketensor"))


_SUBPROCESS = """
import warnings, torch
import fq_plugin.ops as ops
from fq_plugin.ops import reference as ref
print("INFO", ops.backend_info()["cpu"], ops.extension_available(), ops.backend_info()["int8_gemm"])
torch.manual_seed(0)
x = torch.randn(5, 70)
bits, wb = ops.pack_signs(x), ops.pack_signs(torch.randn(6, 70))
for _ in range(2):
    q = ops.quantize_affine_u8(x, x.amin(1), x.amax(1))
    assert torch.equal(q, ref.quantize_affine_u8(x, x.amin(1), x.amax(1)))
    xq, s = ops.quantize_absmax_i8(x)
    w = torch.randint(-128, 128, (6, 70), dtype=torch.int8)
    out = ops.int8_linear(q, torch.ones(1), torch.zeros(1), w, torch.ones(6), torch.zeros(6), w.sum(1, dtype=torch.int32))
    assert torch.equal(out, (q.long() @ w.long().t()).float())
    out = ops.binary_linear_w1a1(bits, torch.ones(5), wb, torch.ones(6), None, 70)
    assert torch.equal(out, ops.unpack_signs(bits, 70) @ ops.unpack_signs(wb, 70).t())
    ops.binary_linear_w1a8(xq, s, wb, torch.ones(6), None, 70)
print("OK")
"""


def _run_python(code, **env):
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=full_env, capture_output=True, text=True,
                          timeout=120)


def test_disabled_extension_uses_reference_and_warns_once():
    proc = _run_python(_SUBPROCESS, FQ_PLUGIN_DISABLE_EXT="1")
    assert proc.returncode == 0, proc.stderr
    assert "INFO reference False reference" in proc.stdout and "OK" in proc.stdout
    assert proc.stderr.count("C++ extension disabled by FQ_PLUGIN_DISABLE_EXT=1") == 1, proc.stderr


def test_cpu_path_forced_by_environment(monkeypatch):
    if not ops.extension_available():
        pytest.skip(f"C++ extension not loaded: {ops.backend_info()['cause']}")
    proc = _run_python(_SUBPROCESS, FQ_PLUGIN_CPU_ISA="portable", FQ_PLUGIN_INT8_GEMM="int_mm")
    assert proc.returncode == 0, proc.stderr
    assert "INFO portable True int_mm" in proc.stdout and "OK" in proc.stdout
    assert "C++ extension" not in proc.stderr
    best = ops.backend_info()["cpu_paths"][-1]
    monkeypatch.setenv("FQ_PLUGIN_CPU_ISA", "sse9")  # what the module does at import, with bad values
    monkeypatch.setenv("FQ_PLUGIN_INT8_GEMM", "blas")
    with pytest.warns(RuntimeWarning) as warned:
        ops._ext._settings_from_env()
    messages = [str(w.message) for w in warned]
    assert any("FQ_PLUGIN_CPU_ISA=sse9 ignored: unknown CPU path 'sse9'" in m for m in messages), messages
    assert any("FQ_PLUGIN_INT8_GEMM=blas ignored: unknown int8 GEMM 'blas'" in m for m in messages), messages
    assert ops.backend_info()["cpu"] == best and ops.backend_info()["int8_gemm"] == "auto"
    with pytest.raises(ValueError, match="unknown int8 GEMM"):
        ops.set_int8_gemm("blas")
    with pytest.raises(ValueError, match="unknown CPU path"):
        ops.set_cpu_isa("sse9")
    if "avx512-vnni" in ops.backend_info()["cpu_paths"]:
        assert ops.set_cpu_isa("avx512") == "avx512-vnni"
    else:
        with pytest.raises(ValueError, match="this CPU cannot run the avx512-vnni path"):
            ops.set_cpu_isa("avx512")
    assert ops.set_cpu_isa("auto") == best


# ------------------------------------------------------------------------------------------------ CUDA

def test_cuda_sources_compile(tmp_path):
    """nvcc -c of every .cu for sm_80 and sm_90, and a syntax check of the CUDA host code against the torch headers."""
    nvcc = shutil.which("nvcc") or next(iter(glob.glob("/usr/local/cuda*/bin/nvcc")), None)
    if nvcc is None:
        pytest.skip("nvcc not found")
    from torch.utils.cpp_extension import include_paths
    sources = sorted((ROOT / "cuda").glob("*.cu"))
    assert sources, "no CUDA sources in cuda/"
    includes = [f"-I{p}" for p in include_paths()] + [f"-I{ROOT / 'cuda'}"]
    generated = "c10/cuda/impl/cuda_cmake_macros.h"  # written by CMake into CUDA wheels only; CPU wheels lack it
    if not any(Path(p, generated).exists() for p in include_paths()):
        shim = tmp_path / "shim" / generated
        shim.parent.mkdir(parents=True)
        shim.write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
        includes.append(f"-I{tmp_path / 'shim'}")
    commands = [[nvcc, "-c", str(src), "-o", str(tmp_path / (src.stem + ".o")), "-std=c++17", "-O2",
                 "-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=sm_90",
                 "-Xcompiler", "-fPIC", *includes] for src in sources]
    candidates = [Path(os.path.realpath(nvcc)).parent.parent / "include", *map(Path, glob.glob("/usr/local/cuda*/include"))]
    cuda_include = next((p for p in candidates if (p / "cuda_runtime.h").exists()), candidates[0])
    commands.append([os.environ.get("CXX", "c++"), "-fsyntax-only", "-std=c++20", str(ROOT / "cuda" / "fq_ops_cuda.cpp"),
                     f"-I{cuda_include}", "-DTORCH_EXTENSION_NAME=_C", *includes])
    for cmd in commands:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr[-4000:]}"


@pytest.mark.gpu
@pytest.mark.parametrize("m,n,k", [(1, 7, 31), (4, 64, 100), (64, 33, 257), (257, 512, 512), (3, 1024, 4096)])
def test_cuda_kernels_match_reference(m, n, k):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    dev = torch.device("cuda")
    args = affine_operands(m, n, k)
    out = ops.int8_linear(*[a.to(dev) for a in args]).cpu()
    assert torch.equal(ops.int8_linear(args[0].to(dev), torch.ones(1, device=dev), torch.zeros(1, device=dev),
                                       args[3].to(dev), torch.ones(n, device=dev), torch.zeros(n, device=dev),
                                       args[6].to(dev)).cpu(), exact_dot(args[0], args[3]).float())
    torch.testing.assert_close(out, ref.int8_linear(*args), rtol=1e-5, atol=1e-3)
    x_q = torch.randint(-128, 128, (m, k), dtype=torch.int8)
    w_bits, x_bits = ref.pack_signs(torch.randn(n, k)), ref.pack_signs(torch.randn(m, k))
    sx, sw = torch.rand(m), torch.rand(n)
    got = ops.binary_linear_w1a8(x_q.to(dev), sx.to(dev), w_bits.to(dev), sw.to(dev), None, k).cpu()
    torch.testing.assert_close(got, ref.binary_linear_w1a8(x_q, sx, w_bits, sw, None, k))
    planes, bias = ref.pack_signs(torch.randn(2 * n, k)), torch.randn(n)
    got = ops.binary_linear_w1a8(x_q.to(dev), sx.to(dev), planes.to(dev), sw.to(dev), bias.to(dev), k, 2).cpu()
    torch.testing.assert_close(got, ref.binary_linear_w1a8(x_q, sx, planes, sw, bias, k, 2))
    for unsigned in (False, True):
        got = ops.binary_linear_w1a1(x_bits.to(dev), sx.to(dev), w_bits.to(dev), sw.to(dev), None, k, unsigned).cpu()
        torch.testing.assert_close(got, ref.binary_linear_w1a1(x_bits, sx, w_bits, sw, None, k, unsigned))
