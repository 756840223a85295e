"""The quantized modules are drop-in: with quantization off they compute what fairseq's modules do,
with it on they stay close, and incremental decoding equals the full forward pass."""
import pytest
import torch
import torch.nn.functional as F
from fairseq.modules import MultiheadAttention

from fq_plugin.modules.quant_attention import QuantMultiheadAttention
from fq_plugin.modules.quant_config import QuantSpec, parse_points
from fq_plugin.modules.quant_layer_norm import QuantLayerNorm
from fq_plugin.modules.quant_linear import QuantLinear
from fq_plugin.quant import Quantizer, WeightQuantizer
from fq_plugin.quant.binary_quantizers import TokenQuantizer


def _set(module, enabled):
    for m in module.modules():
        if isinstance(m, Quantizer):
            m.set_enabled(enabled)
    return module


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _attention_pair(**kwargs):
    ref = MultiheadAttention(16, 4, **kwargs).eval()
    quant = QuantMultiheadAttention(16, 4, QuantSpec(), **kwargs).eval()
    quant.load_state_dict(ref.state_dict(), strict=False)
    return ref, quant


def test_attention_with_quantization_off_matches_fairseq():
    ref, quant = _attention_pair(self_attention=True)
    x = torch.randn(5, 3, 16)
    pad = torch.zeros(3, 5, dtype=torch.bool)
    pad[1, 3:] = True
    out_ref, w_ref = ref(x, x, x, key_padding_mask=pad)
    out, w = quant(x, x, x, key_padding_mask=pad)
    torch.testing.assert_close(out, out_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(w, w_ref, atol=1e-5, rtol=1e-5)


def _calibrate(module, *inputs, **kwargs):
    _set(module, True).train()
    module.dropout_module.p = 0.0
    for _ in range(3):
        module(*inputs, **kwargs)
    return module.eval()


def test_quantized_attention_is_close_and_incremental_decoding_equals_full_pass():
    _, quant = _attention_pair(self_attention=True)
    x = torch.randn(6, 2, 16)
    future = torch.triu(torch.full((6, 6), float("-inf")), 1)
    _calibrate(quant, x, x, x, attn_mask=future)
    full, _ = quant(x, x, x, attn_mask=future)
    ref_out, _ = _set(quant, False)(x, x, x, attn_mask=future)
    _set(quant, True)
    assert (full - ref_out).abs().max() < 0.1 * ref_out.abs().max()
    state = {}
    steps = [quant(x[t:t + 1], x[t:t + 1], x[t:t + 1], incremental_state=state)[0] for t in range(6)]
    torch.testing.assert_close(torch.cat(steps), full, atol=1e-5, rtol=1e-5)


def test_encoder_decoder_attention_caches_static_keys():
    _, quant = _attention_pair(encoder_decoder_attention=True)
    enc = torch.randn(7, 2, 16)
    dec = torch.randn(4, 2, 16)
    pad = torch.zeros(2, 7, dtype=torch.bool)
    pad[0, 5:] = True
    _calibrate(quant, dec, enc, enc, key_padding_mask=pad, static_kv=True)
    full, _ = quant(dec, enc, enc, key_padding_mask=pad, static_kv=True)
    state = {}
    steps = [quant(dec[t:t + 1], enc, enc, key_padding_mask=pad, static_kv=True, incremental_state=state)[0]
             for t in range(4)]
    torch.testing.assert_close(torch.cat(steps), full, atol=1e-5, rtol=1e-5)


def _beam_decode(module, beam_size, dec, enc, pad, new_order):
    """Four decoding steps of 2 sentences x 3 hypotheses; before step 2 the hypotheses are reordered (fairseq's
    reorder_incremental_state) to ``new_order``, fewer rows as sentences finish."""
    module.set_beam_size(beam_size)
    state, outputs, rows = {}, [], torch.arange(6)
    for t in range(4):
        if t == 2:
            module.reorder_incremental_state(state, new_order)
            rows = rows[new_order]
        encoder_out = enc[:, rows]  # one tensor as key and value, as fairseq's decoder layer passes it
        outputs.append(module(dec[t:t + 1, rows], encoder_out, encoder_out, key_padding_mask=pad[rows],
                              static_kv=True, incremental_state=state)[0])
    return outputs, module._get_input_buffer(state)["prev_key"].shape[0]


@pytest.mark.parametrize("new_order,cached_rows", [([5, 3, 4], 1), ([0, 1, 2, 4, 3, 3], 2), ([4, 1], 2)])
def test_beam_hypotheses_share_one_encoder_key_copy_per_sentence(new_order, cached_rows):
    """One cached row per sentence while whole groups of hypotheses remain (sentence 0 finished; a reordering
    within sentences), one per hypothesis otherwise; the outputs are those of per-hypothesis attention."""
    ref, quant = _attention_pair(encoder_decoder_attention=True)
    enc = torch.randn(7, 2, 16).repeat_interleave(3, dim=1)  # fairseq's generator repeats each sentence per beam
    pad = torch.zeros(2, 7, dtype=torch.bool)
    pad[1, 4:] = True
    pad = pad.repeat_interleave(3, dim=0)
    dec = torch.randn(4, 6, 16)
    new_order = torch.tensor(new_order)
    _calibrate(quant, dec, enc, enc, key_padding_mask=pad, static_kv=True)
    per_hypothesis, rows = _beam_decode(quant, 1, dec, enc, pad, new_order)
    assert rows == len(new_order)
    shared, rows = _beam_decode(quant, 3, dec, enc, pad, new_order)
    assert rows == cached_rows
    for a, b in zip(shared, per_hypothesis):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    different = enc.clone()
    different[:, 1] += 1  # hypotheses of one sentence that differ: no sharing
    assert _beam_decode(quant, 3, dec, different, pad, new_order)[1] == len(new_order)
    fairseq_out, _ = _beam_decode(ref, 1, dec, enc, pad, new_order)  # quantization off: fairseq's attention
    for a, b in zip(_beam_decode(_set(quant, False), 3, dec, enc, pad, new_order)[0], fairseq_out):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_self_attention_cache_reordered_lazily_or_never_matches_fairseq(monkeypatch):
    """Beam reorderings (two in a row, fewer rows as sentences finish): inference with the fused attention op keeps
    every key where it was computed and reorders only which row each hypothesis reads (no copy of the keys); without
    the op they are applied when the next step appends; the outputs are fairseq's, whose attention reorders at once."""
    ref, quant = _attention_pair(self_attention=True)
    _set(quant, False)
    x = torch.randn(20, 4, 16)  # 20 steps: the in-place cache grows past its first capacity (16)
    orders = {1: [[2, 0, 1, 1]], 3: [[3, 0, 2], [2, 0]], 17: [[1, 1]]}
    outputs, fused_softmax = [], QuantMultiheadAttention._fused_softmax
    for module, grad, fused in ((ref, True, False), (quant, True, False), (quant, False, True), (quant, False, False)):
        monkeypatch.setattr(QuantMultiheadAttention, "_fused_softmax", fused_softmax if fused else lambda self: None)
        state, rows, steps, caches = {}, torch.arange(4), [], set()
        for t in range(len(x)):
            for order in orders.get(t, []):
                module.reorder_incremental_state(state, torch.tensor(order))
                rows = rows[torch.tensor(order)]
            with torch.set_grad_enabled(grad):
                steps.append(module(x[t:t + 1, rows], x[t:t + 1, rows], x[t:t + 1, rows], incremental_state=state)[0])
            caches.add(module._get_input_buffer(state)["prev_key"].data_ptr())
        outputs.append(steps)
        if fused:  # one buffer until it grows
            assert len(caches) == 2 and module._get_input_buffer(state)["key_rows"].shape == (2, 20)
    for fairseq_step, *steps in zip(*outputs):
        for step in steps:
            torch.testing.assert_close(step, fairseq_step, atol=1e-5, rtol=1e-5)


def test_fully_masked_query_rows_give_zero_attention_not_nan():
    _, quant = _attention_pair(self_attention=True)
    x = torch.randn(3, 1, 16)
    _calibrate(quant, x, x, x)
    out, weights = quant(x, x, x, key_padding_mask=torch.ones(1, 3, dtype=torch.bool))
    assert torch.isfinite(out).all() and torch.equal(weights, torch.zeros_like(weights))


def test_layer_norm_off_matches_torch_and_on_stays_close():
    ln = QuantLayerNorm(32, QuantSpec(), "ffn_ln_out")
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.uniform_(-0.5, 0.5)
    x = torch.randn(5, 3, 32) * 4 + 1
    ref = F.layer_norm(x, (32,), ln.weight, ln.bias)
    torch.testing.assert_close(ln(x), ref)
    _set(ln, True).train()
    ln(x)
    ln.eval()
    assert (ln(x) - ref).abs().max() < 0.1


def test_layer_norm_denominator_gradient_passes_when_clamped():
    spec = QuantSpec(points=parse_points("ln_den"))
    ln = _set(QuantLayerNorm(8, spec), True)
    ln.train()
    ln(torch.randn(4, 2, 8))  # calibrate on unit-scale inputs
    ln.eval()
    x = (torch.randn(4, 2, 8) * 50).requires_grad_()  # denominators far outside the range
    ln(x).pow(2).sum().backward()
    assert x.grad.abs().sum() > 0


def _run_profiled(op, fn):
    """``fn()`` and whether the op ``fq_plugin::<op>`` ran in it."""
    with torch.profiler.profile() as prof:
        out = fn()
    return out, any(e.name == f"fq_plugin::{op}" for e in prof.events())


def test_inference_runs_one_fused_softmax_bit_identical_to_the_training_formula():
    _, quant = _attention_pair(self_attention=True)
    x = torch.randn(6, 2, 16)
    future = torch.triu(torch.full((6, 6), float("-inf")), 1)
    _calibrate(quant, x, x, x, attn_mask=future)
    out_parts, w_parts = quant(x, x, x, attn_mask=future, need_head_weights=True)  # gradient on: ATen parts
    with torch.no_grad():
        (out, w), fused = _run_profiled("quantized_softmax",
                                        lambda: quant(x, x, x, attn_mask=future, need_head_weights=True))
        assert fused
        assert torch.equal(w, w_parts) and torch.equal(out, out_parts)
        state = {}
        steps = [quant(x[t:t + 1], x[t:t + 1], x[t:t + 1], incremental_state=state)[0] for t in range(6)]
        torch.testing.assert_close(torch.cat(steps), out, atol=1e-5, rtol=1e-5)


def test_decoding_keeps_8_bit_key_codes_and_attends_as_with_float_keys(monkeypatch):
    """Incremental decoding at inference runs one attention op per step on cached 8-bit codes of the keys and values
    (one range per activation point, as ``--quant-bucketing weight``); the outputs equal those of the same op on the
    float (fake-quantized) keys and values, and the full pass."""
    quant = QuantMultiheadAttention(16, 4, QuantSpec(bucketed={"weight"}), self_attention=True)
    x = torch.randn(6, 2, 16)
    future = torch.triu(torch.full((6, 6), float("-inf")), 1)
    _calibrate(quant, x, x, x, attn_mask=future)

    def decode():
        state = {}
        steps = [quant(x[t:t + 1], x[t:t + 1], x[t:t + 1], incremental_state=state)[0] for t in range(6)]
        return torch.cat(steps), quant._get_input_buffer(state)["prev_key"]

    with torch.no_grad():
        full, _ = quant(x, x, x, attn_mask=future)
        (codes_out, cache), fused = _run_profiled("quantized_attention", decode)
        assert fused and cache.dtype == torch.uint8 and cache.shape == (2, 4, 6, 4)
        monkeypatch.setattr(QuantMultiheadAttention, "_kv_code_grid", lambda self: None)
        float_out, float_cache = decode()
    assert float_cache.dtype == torch.float32
    assert torch.equal(codes_out, float_out)
    torch.testing.assert_close(codes_out, full, atol=1e-5, rtol=1e-5)


def test_inference_runs_one_fused_layer_norm_bit_identical_to_the_training_formula():
    ln = QuantLayerNorm(32, QuantSpec(), "ffn_ln_out")
    x = torch.randn(5, 3, 32) * 4 + 1
    _set(ln, True).train()
    ln(x)
    ln.eval()
    parts = ln(x)
    with torch.no_grad():
        y, fused = _run_profiled("quantized_layer_norm", lambda: ln(x))
    assert fused
    assert torch.equal(y, parts)
    x[1, 2, 3] = float("nan")
    with torch.no_grad(), pytest.raises(FloatingPointError, match="NaN"):
        ln(x)


def test_per_token_quantized_input_runs_the_symmetric_int8_gemm():
    """The output projection of binarized models with --output-input-bits 8: in inference its integer twin multiplies
    absmax codes of each token with the 8-bit weight codes; training multiplies the fake-quantized values."""
    layer = _set(QuantLinear(64, 300, bias=False, weight_quantizer=WeightQuantizer(8),
                             token_quantizer=TokenQuantizer("absmax8")), True).eval()
    x = torch.randn(5, 2, 64)
    fake_quantized = layer(x)  # gradient on: the fake-quantized operands
    with torch.no_grad():
        y, ran = _run_profiled("int8_linear_symmetric", lambda: layer(x))
    assert ran and torch.allclose(y, fake_quantized, rtol=1e-4, atol=1e-4)
    x[0, 1, 3] = float("nan")
    with torch.no_grad(), pytest.raises(FloatingPointError, match="NaN"):
        layer(x)


def test_unknown_points_and_bits_fail_fast():
    with pytest.raises(ValueError, match="unknown quantization point"):
        parse_points("qkv,softmax")
    with pytest.raises(ValueError, match="bit width"):
        QuantSpec(bits=9)


@pytest.mark.parametrize("shape", [(1, 6, 16), (3, 6, 16), (0, 6, 16)])
def test_linear_rows_is_f_linear_on_a_decoding_step_view(shape):
    """The B x T x C view of a T x B x C tensor (what fairseq's output layer gets) gives F.linear's values."""
    from fq_plugin.modules.packed_linear import linear_rows
    x = torch.randn(shape).transpose(0, 1)
    weight, bias = torch.randn(40, 16), torch.randn(40)
    out = linear_rows(x, weight, bias)
    assert out.shape == (6, shape[0], 40)
    torch.testing.assert_close(out, F.linear(x.contiguous(), weight, bias))
    if shape[0]:  # one 1-D row
        torch.testing.assert_close(linear_rows(x[0, 0], weight), F.linear(x[0, 0], weight))
