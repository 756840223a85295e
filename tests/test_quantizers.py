"""Unit tests of the seed 003 quantization primitives: values, gradients, ranges, buffers, bad input."""
import pytest
import torch

from fq_plugin.quant import ActivationQuantizer, WeightQuantizer, check_bits, fake_quantize, token_mask


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_fake_quantize_matches_formula_and_level_count(bits):
    x = torch.randn(1000) * 3
    lo, hi = torch.tensor(-2.0), torch.tensor(2.5)
    s = (hi - lo) / (2**bits - 1)
    expected = torch.round((x.clamp(lo, hi) - lo) / s) * s + lo
    out = fake_quantize(x, lo, hi, bits)
    torch.testing.assert_close(out, expected)
    assert out.unique().numel() <= 2**bits
    inside = (x >= lo) & (x <= hi)
    assert ((out - x)[inside].abs() <= s / 2 + 1e-6).all()


@pytest.mark.parametrize("bits", [1, 9, 0, 2.5, "8"])
def test_bad_bit_widths_are_refused(bits):
    with pytest.raises(ValueError, match="bit width"):
        check_bits(bits)
    with pytest.raises(ValueError, match="bit width"):
        ActivationQuantizer(bits=bits)


def test_ste_zero_gradient_for_clamped_values_only():
    x = torch.tensor([-3.0, -1.0, 0.0, 1.0, 3.0], requires_grad=True)
    fake_quantize(x, torch.tensor(-2.0), torch.tensor(2.0), 8).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_layernorm_denominator_gradient_is_never_zeroed():
    x = torch.tensor([-3.0, 0.5, 3.0], requires_grad=True)
    fake_quantize(x, torch.tensor(-2.0), torch.tensor(2.0), 8, pass_clamped=True).sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0]


def test_zero_range_is_exact_and_finite():
    x = torch.full((4, 3), 0.7, requires_grad=True)
    out = fake_quantize(x, torch.tensor(0.7), torch.tensor(0.7), 8)
    out.sum().backward()
    assert torch.equal(out, torch.full((4, 3), 0.7))
    assert torch.isfinite(x.grad).all()
    w = torch.zeros(3, 5)  # all-zero weight rows: x_min == x_max == 0
    assert torch.equal(_enabled(WeightQuantizer())(w), w)


def _enabled(quantizer):
    quantizer.set_enabled(True)
    return quantizer


def test_weight_quantizer_per_row_ranges():
    w = torch.randn(6, 20)
    w[0] *= 100  # one wide row must not coarsen the others
    out = _enabled(WeightQuantizer(bits=4))(w)
    for row, qrow in zip(w, out):
        assert qrow.unique().numel() <= 16
        assert torch.isclose(qrow.min(), row.min()) and torch.isclose(qrow.max(), row.max())
        assert (qrow - row).abs().max() <= (row.max() - row.min()) / 15 / 2 + 1e-5
    whole = _enabled(WeightQuantizer(bits=4, bucketed=False))(w)
    assert whole.unique().numel() <= 16
    assert (whole[1:] - w[1:]).abs().max() > (out[1:] - w[1:]).abs().max()


def test_weight_quantizer_refuses_nan_and_inf():
    for bad in (float("nan"), float("inf")):
        w = torch.randn(3, 4)
        w[1, 2] = bad
        with pytest.raises(FloatingPointError, match="NaN or Inf"):
            _enabled(WeightQuantizer(name="fc1"))(w)


def test_activation_ema_ranges_momentum_and_freeze():
    q = _enabled(ActivationQuantizer())
    q.train()
    q(torch.tensor([-1.0, 2.0]))
    assert (q.x_min.item(), q.x_max.item()) == (-1.0, 2.0)
    q(torch.tensor([-3.0, 4.0]))
    assert q.x_min.item() == pytest.approx(0.9 * -1 + 0.1 * -3)
    assert q.x_max.item() == pytest.approx(0.9 * 2 + 0.1 * 4)
    q.eval()
    before = q.x_min.clone(), q.x_max.clone()
    out = q(torch.tensor([-100.0, 100.0]))
    assert torch.equal(q.x_min, before[0]) and torch.equal(q.x_max, before[1])
    assert out.tolist() == pytest.approx([before[0].item(), before[1].item()])


def test_disabled_quantizer_is_identity_and_keeps_ranges():
    q = ActivationQuantizer()
    q.train()
    x = torch.randn(10)
    assert q(x) is x
    assert not q.initialized.any()


def test_bucketed_activation_has_one_range_per_feature():
    q = _enabled(ActivationQuantizer(num_buckets=3))
    q.train()
    x = torch.randn(5, 2, 3) * torch.tensor([1.0, 10.0, 100.0])
    q(x)
    torch.testing.assert_close(q.x_min, x.amin(dim=(0, 1)))
    torch.testing.assert_close(q.x_max, x.amax(dim=(0, 1)))
    with pytest.raises(ValueError, match="buckets"):
        q(torch.randn(5, 2, 4))


def test_padding_is_ignored_in_range_statistics():
    q = _enabled(ActivationQuantizer(num_buckets=2))
    q.train()
    x = torch.randn(4, 2, 2)  # T x B x C
    x[3, 1] = 1000.0  # a padding position
    valid = torch.ones(2, 4, dtype=torch.bool)  # B x T
    valid[1, 3] = False
    with token_mask(valid):
        from fq_plugin.quant import valid_positions
        q(x, valid_positions(x))
    assert q.x_max.max() < 100


def test_all_padding_batch_leaves_ranges_and_output_finite():
    q = _enabled(ActivationQuantizer(num_buckets=2))
    q.train()
    x = torch.randn(3, 2, 2)
    out = q(x, torch.zeros(3, 2, 1, dtype=torch.bool))
    assert not q.initialized.any() and torch.equal(out, x)
    q(x)
    saved = q.x_min.clone(), q.x_max.clone()
    out = q(x * 50, torch.zeros(3, 2, 1, dtype=torch.bool))
    assert torch.equal(q.x_min, saved[0]) and torch.equal(q.x_max, saved[1])
    assert torch.isfinite(out).all()


def test_inf_is_left_out_of_ranges_and_saturates():
    q = _enabled(ActivationQuantizer())
    q.train()
    out = q(torch.tensor([-1.0, 0.5, float("inf"), 2.0, float("-inf")]))
    assert (q.x_min.item(), q.x_max.item()) == (-1.0, 2.0)
    assert out[2].item() == pytest.approx(2.0) and out[4].item() == pytest.approx(-1.0)


def test_nan_input_raises_in_training_and_eval():
    q = _enabled(ActivationQuantizer(name="ffn_out"))
    q.train()
    with pytest.raises(FloatingPointError, match="ffn_out"):
        q(torch.tensor([1.0, float("nan")]))
    q(torch.tensor([1.0, 2.0]))
    q.eval()
    with pytest.raises(FloatingPointError, match="ffn_out"):
        q(torch.tensor([1.0, float("nan")]))


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("buckets,bucket_dim", [(1, -1), (6, -1), (4, 1)])
def test_inference_path_gives_the_training_path_values(buckets, bucket_dim, fused):
    """Eval without autograd runs cached step sizes (packed models: the fused op); the values are bit for bit those
    of the differentiable path, for contiguous and strided inputs."""
    import fq_plugin.ops  # noqa: F401  (registers torch.ops.fq_plugin)
    q = _enabled(ActivationQuantizer(num_buckets=buckets, bucket_dim=bucket_dim))
    q.fused_inference = fused
    q.train()
    q(torch.randn(3, 4, 6) * 2)
    q.eval()
    x = torch.randn(3, 4, 6) * 3
    expected = fake_quantize(x.requires_grad_(), q.x_min.view(q._range_shape(x)), q.x_max.view(q._range_shape(x)))
    with torch.no_grad():
        for inp in (x.detach(), x.detach().transpose(0, 1).contiguous().transpose(0, 1)):
            out = q(inp)
            assert torch.equal(out, expected.detach()) and out.stride() == inp.stride()
        x_nan = x.detach().clone()
        x_nan[1, 2, 3] = float("nan")
        with pytest.raises(FloatingPointError, match="NaN"):
            q(x_nan)


def test_relu_quantizer_fixes_x_min_to_zero():
    q = _enabled(ActivationQuantizer(unsigned=True))
    q.train()
    q(torch.tensor([0.5, 3.0]))
    assert q.x_min.item() == 0.0
    assert q(torch.tensor([0.0])).item() == 0.0  # zero is represented exactly


def test_uncalibrated_quantizer_passes_through_with_one_warning():
    q = _enabled(ActivationQuantizer(name="qkv"))
    q.eval()
    x = torch.randn(4)
    with pytest.warns(UserWarning, match="qkv"):
        assert torch.equal(q(x), x)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        q(x)


def test_ranges_and_switch_round_trip_through_state_dict():
    q = _enabled(ActivationQuantizer(num_buckets=2))
    q.train()
    q(torch.randn(7, 2))
    state = q.state_dict()
    assert set(state) == {"x_min", "x_max", "initialized", "enabled"}
    fresh = ActivationQuantizer(num_buckets=2)
    fresh.load_state_dict(state)
    fresh.eval()
    q.eval()
    x = torch.randn(5, 2)
    assert torch.equal(fresh(x), q(x))
    w = WeightQuantizer()
    w.load_state_dict(_enabled(WeightQuantizer()).state_dict())
    assert w._enabled


def test_trusted_caches_skip_the_checks_only_in_their_own_thread():
    """A weight quantizer's cached value follows an in-place change of the weight, except inside
    ``trusted_inference_caches`` (the later steps of one beam search), and only in the thread that entered it."""
    import threading

    from fq_plugin.quant.inference_cache import trusted_inference_caches
    quantizer = WeightQuantizer(bits=4)
    quantizer.set_enabled(True)
    weight = torch.nn.Parameter(torch.randn(3, 5), requires_grad=False)
    first = quantizer(weight)
    with torch.no_grad():
        weight.mul_(2)
    seen = {}
    with trusted_inference_caches():
        assert quantizer(weight) is first  # trusted: the cached value, unchecked
        thread = threading.Thread(target=lambda: seen.update(other=quantizer(weight)))
        thread.start()
        thread.join()
    assert torch.equal(seen["other"], fake_quantize(weight, *quantizer.ranges(weight), 4))
    with trusted_inference_caches(False):
        assert torch.equal(quantizer(weight), seen["other"])  # checked: rebuilt for the changed weight


@pytest.mark.parametrize("bucketed", [True, False])
def test_positions_of_a_decoding_step_are_quantized_once_for_all_hypotheses(bucketed):
    """fairseq's positional embedding of a decoding step is one row expanded over the batch (stride 0): the hook
    quantizes that row once and returns it expanded, equal to quantizing every copy."""
    quantizer = WeightQuantizer(8, bucketed=bucketed)
    quantizer.set_enabled(True)
    row = torch.randn(1, 1, 16) * 3
    expanded = row.expand(5, 1, 16)
    out = quantizer.quantize_output_rows(None, (), expanded)
    assert out.shape == (5, 1, 16) and out.stride(0) == 0
    assert torch.equal(out, quantizer.quantize_output_rows(None, (), expanded.contiguous()))
    assert not torch.equal(out, expanded)  # quantized
