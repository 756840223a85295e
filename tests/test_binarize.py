"""Binarizers, ternarization, ternary weight splitting and BiT's elastic activation: values and gradients."""
import pytest
import torch

from fq_plugin.modules.binary_config import BinarySpec
from fq_plugin.quant import binarize
from fq_plugin.quant.binary_quantizers import BinaryWeightQuantizer, ElasticBinaryQuantizer, TokenQuantizer


def test_aqt_binarizer_gives_half_bound_values_and_clipped_gradient():
    w = torch.tensor([[0.4, -0.1, 0.0, -0.8]], requires_grad=True)
    out = binarize.binarize_weight_bmt(w)
    assert torch.equal(out, torch.tensor([[0.4, -0.4, 0.4, -0.4]]))  # +-B/2 with B = max|w| = 0.8
    out.sum().backward()
    assert torch.equal(w.grad, torch.tensor([[1.0, 1.0, 1.0, 0.0]]))  # |w/B| = 1 is clipped


def test_bitnet_and_bit_weights_are_mean_centred_signs_with_l1_scale():
    w = torch.tensor([[1.0, 2.0, 3.0, 6.0], [-1.0, -1.0, 1.0, 1.0]])
    per_row = binarize.binarize_weight_centered(w)
    assert torch.equal(per_row, torch.tensor([[-3.0, -3.0, -3.0, 3.0], [-1.0, -1.0, 1.0, 1.0]]))
    per_tensor = binarize.binarize_weight_centered(w, per_row=False)
    assert set(per_tensor.abs().unique().tolist()) == {2.0}  # mean|W| over the whole matrix


def test_ternary_weights_follow_twn():
    w = torch.tensor([[0.05, -1.0, 0.9, 0.3]])
    values, alpha, kept = binarize.ternary_parts(w)
    # Delta = 0.7 * mean|w| = 0.39375: keeps -1.0 and 0.9, alpha = 0.95
    assert kept.tolist() == [[False, True, True, False]]
    torch.testing.assert_close(alpha, torch.tensor([[0.95]]))
    torch.testing.assert_close(values, torch.tensor([[0.0, -0.95, 0.95, 0.0]]))


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (64, 256), (512, 64)])
def test_ternary_split_planes_binarize_to_the_ternary_weight(shape):
    w = torch.randn(*shape) * 0.05
    w1, w2 = binarize.split_ternary(w)
    torch.testing.assert_close(w1 + w2, w.double())
    split = binarize.binarize_weight_l1(w1.float()) + binarize.binarize_weight_l1(w2.float())
    torch.testing.assert_close(split, binarize.ternary_parts(w)[0], atol=1e-6, rtol=1e-5)


def test_ternary_split_of_degenerate_rows():
    w = torch.tensor([[0.0, 0.0, 0.0], [1.0, -1.0, 1.0]])  # all zero; all kept (no J, K)
    w1, w2 = binarize.split_ternary(w)
    split = binarize.binarize_weight_l1(w1.float()) + binarize.binarize_weight_l1(w2.float())
    torch.testing.assert_close(split, binarize.ternary_parts(w)[0])


def test_absmax_tokens_use_127_levels_and_keep_zero_tokens():
    x = torch.tensor([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0]])
    out = binarize.quantize_tokens_absmax(x)
    codes = out[0] * 127 / 1.0
    assert torch.equal(codes, torch.round(codes)) and codes.abs().max() == 127
    assert torch.equal(out[1], torch.zeros(3))


def test_elastic_binarization_values_and_lsq_gradients():
    x = torch.tensor([-2.0, -0.5, 0.25, 3.0], requires_grad=True)
    alpha = torch.tensor(1.0, requires_grad=True)
    out = binarize.elastic_binarize(x, alpha)
    assert torch.equal(out, torch.tensor([-1.0, -1.0, 1.0, 1.0]))
    out.sum().backward()
    assert torch.equal(x.grad, torch.tensor([0.0, 1.0, 1.0, 0.0]))
    # d out / d alpha = level - x/alpha inside [-1, 1], level outside
    torch.testing.assert_close(alpha.grad, torch.tensor(-1.0 + (-1 + 0.5) + (1 - 0.25) + 1.0))
    probs = binarize.elastic_binarize(torch.tensor([0.1, 0.3, 0.9]), torch.tensor(0.5), unsigned=True)
    assert torch.equal(probs, torch.tensor([0.0, 0.5, 0.5]))


def test_elastic_quantizer_initialises_alpha_from_valid_positions_and_scales_its_learning_rate():
    quantizer = ElasticBinaryQuantizer(features=3, lr_scale=10.0)
    quantizer.set_enabled(True)
    x = torch.tensor([[[1.0, -1.0, 2.0]], [[100.0, 100.0, 100.0]]])  # T x B x C; position 1 is padding
    valid = torch.tensor([[[True]], [[False]]])
    quantizer.train()
    quantizer(x, valid)
    torch.testing.assert_close(quantizer.alpha, torch.tensor(2 * 4.0 / 3))
    torch.testing.assert_close(quantizer.alpha_raw.data, torch.tensor(2 * 4.0 / 3 / 10))
    assert bool(quantizer.initialized)


def test_binarizers_refuse_nan_and_pass_through_when_disabled():
    weight, tokens = BinaryWeightQuantizer("bmt"), TokenQuantizer("binary")
    x = torch.randn(4, 8)
    assert weight(x) is x and tokens(x) is x  # disabled until the schedule switches them on
    weight.set_enabled(True)
    tokens.set_enabled(True)
    with pytest.raises(FloatingPointError):
        weight(torch.tensor([[float("nan"), 1.0]]))
    with pytest.raises(FloatingPointError):
        tokens(torch.tensor([[float("nan"), 1.0]]))
    with pytest.raises(ValueError, match="unknown weight binarizer"):
        BinaryWeightQuantizer("quaternary")


@pytest.mark.parametrize("method, bits", [("bmt", 1), ("bitnet", 8), ("bit", 1)])
def test_binary_linear_pruning_protocol_keeps_the_selected_features(method, bits):
    spec = BinarySpec(method, activation_bits=bits, extra_layernorm=False)
    fc1, fc2 = spec.linear(8, 16, "fc1"), spec.linear(16, 8, "fc2", relu_input=True)
    for module in (fc1, fc2):
        for quantizer in module.modules():
            if hasattr(quantizer, "set_enabled"):
                quantizer.set_enabled(True)
    x = torch.randn(5, 8)
    keep = torch.tensor([0, 3, 4, 9, 15])
    full_hidden = fc1(x)
    fc1.select_output_features(keep)
    if method != "bitnet":  # per-row weight scales: the kept rows compute exactly what they did
        torch.testing.assert_close(fc1(x), full_hidden[:, keep])
    fc2.select_input_features(keep)
    assert fc2.weight.shape == (8, 5) and fc2(torch.relu(fc1(x))).shape == (5, 8)


def test_weight_binarizers_do_not_depend_on_the_thread_count():
    """torch splits a float32 sum across threads in a way that depends on their number; the weight scales must not,
    or a checkpoint packed with two threads would translate differently from its QAT model run with one."""
    torch.manual_seed(0)
    weights = [torch.randn(512, 2048) * 0.05 for _ in range(6)]
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append([fn(w) for w in weights for fn in (
                lambda w: binarize.binarize_weight_centered(w, per_row=False), binarize.binarize_weight_centered,
                binarize.binarize_weight_l1, binarize.ternarize_weight)])
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(*results))
