"""fq-pack through the real CLI: a packed checkpoint translates like the fake-quantized checkpoint it came from
(fairseq-generate and fairseq-interactive), runs the integer/bit kernels, is smaller, and bad inputs are refused
without touching the input."""
import platform
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import fq_plugin  # noqa: F401  (allows fairseq checkpoint types in torch.load)
from fairseq import checkpoint_utils

import fq_plugin.ops as ops
from fq_plugin.modules.packed_linear import (PackedBinaryLinear, PackedEmbedding, PackedInt8Linear, binary_planes,
                                             pack_binary_weight, pack_int8_weight)
from fq_plugin.pack import main as pack_main
from fq_plugin.pack import pack_state
from fq_plugin.quant import ActivationQuantizer, WeightQuantizer
from fq_plugin.quant.binary_quantizers import BinaryWeightQuantizer, ElasticBinaryQuantizer, TokenQuantizer

from helpers import cli_env, generate_bleu, run_cli, run_main, train


def _load(path):
    return torch.load(path, map_location="cpu")  # weights_only (torch's default)


def _pack(source, target):
    before = source.read_bytes()
    run_cli("fq-pack", source, target)
    assert source.read_bytes() == before  # the input is never modified
    return target


def _model_bytes(path):
    """Bytes of the tensors fairseq-generate uses (the float checkpoint also holds optimizer state)."""
    seen, total = set(), 0
    for tensor in _load(path)["model"].values():
        key = tensor.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += tensor.untyped_storage().nbytes()
    return total


def _assert_same_translations(data, checkpoint, packed, min_bleu=None):
    bleu, hyps = generate_bleu(data, checkpoint)
    packed_bleu, packed_hyps = generate_bleu(data, packed)
    same = sum(hyps[k] == packed_hyps.get(k) for k in hyps)
    assert len(hyps) == 100 and same >= 99, f"only {same} of {len(hyps)} translations identical"
    assert abs(bleu - packed_bleu) <= 0.1
    if min_bleu is not None:
        assert packed_bleu > min_bleu
    return hyps


def _packed_layers(path, data):
    models, _ = checkpoint_utils.load_model_ensemble([str(path)], arg_overrides={"data": str(data)})
    return {name: m for name, m in models[0].named_modules()
            if isinstance(m, (PackedInt8Linear, PackedBinaryLinear, PackedEmbedding))}


@pytest.fixture(scope="module")
def fqt_deploy(data_bin, tmp_path_factory):
    """8-bit FQT with one range per activation (weights per row): every GEMM input has a single grid; output
    projection tied to the decoder embeddings."""
    save = tmp_path_factory.mktemp("fqt_deploy")
    train(data_bin, save, "--quant-start-update", "0", "--quant-bucketing", "weight",
          "--share-decoder-input-output-embed", max_update=150)
    return save / "checkpoint_last.pt"


def test_packed_int8_model_translates_like_the_qat_model_with_int8_gemms(data_bin, fqt_deploy, tmp_path):
    packed = _pack(fqt_deploy, tmp_path / "packed.pt")
    _assert_same_translations(data_bin, fqt_deploy, packed, min_bleu=30)  # far above chance (~2)
    layers = _packed_layers(packed, data_bin)
    linears = [m for m in layers.values() if isinstance(m, PackedInt8Linear)]
    assert len(linears) == 2 * 6 + 2 * 10 + 1  # every projection and the output projection
    assert all(m._input_grid() is not None for m in linears), "a layer fell back to float"
    output = layers["decoder.output_projection"]
    assert output.weight_codes is layers["decoder.embed_tokens"].weight_codes  # tied to the embeddings
    for name in ("encoder.layers.0", "decoder.layers.1"):  # the ReLU leaves its quantization to fc2's GEMM
        activation = layers[f"{name}.fc2"].input_quantizer
        assert activation is not None and activation.name == "relu_out"
    models, _ = checkpoint_utils.load_model_ensemble([str(packed)], arg_overrides={"data": str(data_bin)})
    assert all(layer.activation_fn.consumer is layer.fc2 for layer in models[0].decoder.layers)
    assert _model_bytes(packed) < 0.3 * _model_bytes(fqt_deploy)


def test_both_int8_gemms_translate_alike(data_bin, fqt_deploy, tmp_path):
    """fairseq-generate on our kernels and on torch._int_mm (oneDNN) with our epilogue: the same integer products
    and the same epilogue, so the same translations (``auto`` picks one of them by CPU and row count)."""
    if not ops.extension_available():
        pytest.skip(f"C++ extension not loaded: {ops.backend_info()['cause']}")
    packed = _pack(fqt_deploy, tmp_path / "packed.pt")
    hyps = {gemm: generate_bleu(data_bin, packed, env={"FQ_PLUGIN_INT8_GEMM": gemm})[1]
            for gemm in ("kernels", "int_mm")}
    assert len(hyps["kernels"]) == 100 and hyps["kernels"] == hyps["int_mm"]


_FAULTS_BEFORE_AND_AFTER_LOADING = """
import resource, sys, torch
import fq_plugin  # noqa: F401  (the safe loader needs its types registered)
from fairseq import checkpoint_utils

def faults_of_reallocating():
    faults = []
    for _ in range(6):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.ones(512, 32000)  # 64 MB, above glibc's largest default mmap threshold; freed at once
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return max(faults[3:])  # the first allocations grow the heap

before = faults_of_reallocating()
checkpoint_utils.load_model_ensemble([sys.argv[1]], arg_overrides={"data": sys.argv[2], "user_dir": sys.argv[3]})
print(before, faults_of_reallocating())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc is tuned on glibc only")
def test_decoding_a_packed_checkpoint_reuses_freed_memory(data_bin, fqt_deploy, tmp_path):
    """Building a packed model tunes glibc's malloc so that a large tensor allocated again (beam search allocates
    several per step) reuses freed memory instead of faulting its pages in again, as it does before the model is
    loaded; FQ_PLUGIN_KEEP_FREED_MEMORY=0 leaves malloc as it is."""
    packed = _pack(fqt_deploy, tmp_path / "packed.pt")
    faults = {}
    for keep in ("1", "0"):
        proc = subprocess.run([sys.executable, "-c", _FAULTS_BEFORE_AND_AFTER_LOADING, packed, data_bin,
                               fq_plugin.__path__[0]], env=cli_env({"FQ_PLUGIN_KEEP_FREED_MEMORY": keep}),
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        faults[keep] = [int(n) for n in proc.stdout.split()[-2:]]
    if faults["1"][0] == 0:
        pytest.skip("malloc reuses freed memory here already (MALLOC_* or GLIBC_TUNABLES set?)")
    assert faults["1"][1] * 10 < faults["1"][0] and faults["0"][1] * 2 > faults["0"][0], faults
    proc = run_cli("fairseq-generate", data_bin, "--user-dir", fq_plugin.__path__[0], "--path", packed, "--cpu",
                   "--gen-subset", "valid", "--max-sentences", "2", "--max-tokens", "4000")
    assert "decoding keeps freed memory for reuse" in proc.stdout + proc.stderr


def test_decoding_steps_match_fairseqs_own_normalization_and_reordering(data_bin, fqt_deploy, tmp_path, monkeypatch):
    """What our models change in fairseq's beam-search step: the log-probabilities are written over the step's logits
    (no new batch x vocabulary tensor), and the modules with a cache to reorder are listed once. The same hypotheses
    and scores as with fairseq's own methods."""
    from fairseq.models.fairseq_incremental_decoder import FairseqIncrementalDecoder
    from fairseq.models.fairseq_model import FairseqEncoderDecoderModel
    from fairseq.sequence_generator import SequenceGenerator

    models, _, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(_pack(fqt_deploy, tmp_path / "packed.pt"))], arg_overrides={"data": str(data_bin)})
    model = models[0].eval()
    task.load_dataset("valid")
    sample = next(task.get_batch_iterator(task.dataset("valid"), max_sentences=8).next_epoch_itr(shuffle=False))
    generator = SequenceGenerator([model], task.target_dictionary, beam_size=4, len_penalty=0.6)
    overwritten = []
    normalize = type(model).get_normalized_probs

    def spy(self, net_output, log_probs, sample=None):
        out = normalize(self, net_output, log_probs, sample)
        overwritten.append(out.data_ptr() == net_output[0].data_ptr())
        return out

    with torch.no_grad():
        monkeypatch.setattr(type(model), "get_normalized_probs", spy)
        ours = generator.generate([model], sample)
        assert overwritten and all(overwritten)
        monkeypatch.setattr(type(model), "get_normalized_probs", FairseqEncoderDecoderModel.get_normalized_probs)
        monkeypatch.setattr(type(model.decoder), "reorder_incremental_state_scripting",
                            FairseqIncrementalDecoder.reorder_incremental_state_scripting)
        fairseqs = generator.generate([model], sample)
        net_output = model(**sample["net_input"])  # a whole-sequence pass (scoring, validation): logits kept
        logits = net_output[0].clone()
        normalize(model, net_output, log_probs=True)
        assert torch.equal(net_output[0], logits)
    for mine, theirs in zip(ours, fairseqs):
        for a, b in zip(mine, theirs):
            assert torch.equal(a["tokens"], b["tokens"]) and torch.equal(a["score"], b["score"])
            assert torch.equal(a["positional_scores"], b["positional_scores"])


def _generator_and_sample(path, data_bin, sentences=8):
    """A packed model, its beam search, and one batch of ``sentences`` validation sentences of different lengths."""
    from fairseq.sequence_generator import SequenceGenerator
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(path)], arg_overrides={"data": str(data_bin)})
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    by_length = sorted(range(len(dataset)), key=lambda i: dataset.src_sizes[i])
    sample = dataset.collater([dataset[i] for i in by_length[::len(by_length) // sentences][:sentences]])
    model = models[0].eval()
    return model, SequenceGenerator([model], task.target_dictionary, beam_size=4, len_penalty=0.6), sample


def test_later_steps_of_a_search_reuse_cached_values_and_a_new_search_checks_them(data_bin, fqt_deploy, tmp_path,
                                                                                 monkeypatch):
    """Decoding steps after a search's first use the cached kernel weights and grids without checking them; the next
    search checks them again, so a weight changed in place between two searches is used, as by a fresh model."""
    import fq_plugin.models.fq_transformer as fq_transformer
    packed = _pack(fqt_deploy, tmp_path / "packed.pt")
    model, generator, sample = _generator_and_sample(packed, data_bin)
    trusted, original = [], fq_transformer.trusted_inference_caches

    def spy(flag=True):
        trusted.append(flag)
        return original(flag)

    def change(m):
        m.decoder.output_projection.weight_scale.mul_(1.5)  # shared with the embeddings: both change
        m.decoder.layers[0].fc1.weight_codes[:, 0] //= 2

    monkeypatch.setattr(fq_transformer, "trusted_inference_caches", spy)
    with torch.no_grad():
        before = generator.generate([model], sample)
        assert len(trusted) > 2 and not trusted[0] and all(trusted[1:])
        change(model)
        after = generator.generate([model], sample)
        fresh, fresh_generator, _ = _generator_and_sample(packed, data_bin)
        change(fresh)
        expected = fresh_generator.generate([fresh], sample)

    def outputs(hypotheses):
        return [(h["tokens"].tolist(), h["positional_scores"].tolist()) for hyps in hypotheses for h in hyps]
    assert outputs(after) == outputs(expected)
    assert outputs(after) != outputs(before)


@pytest.fixture(scope="module")
def bitnet(data_bin, tmp_path_factory):
    """BitNet: float keys and values, whose decoding cache beam search reads through row indices (not reordered)."""
    save = tmp_path_factory.mktemp("bitnet")
    train(data_bin, save, "--quant-start-update", "0", "--embedding-bits", "8", arch="bitnet_transformer_tiny",
          max_update=60)
    return save / "checkpoint_last.pt"


@pytest.mark.parametrize("checkpoint", ["fqt_deploy", "bitnet"])
def test_decoding_scores_equal_a_full_pass_over_the_hypotheses(data_bin, checkpoint, request, tmp_path):
    """Sentences of different lengths in one batch, finishing at different steps (hypotheses' rows reordered and
    dropped, encoder masks kept per search; 8-bit key codes copied in beam order, float keys left in place): each
    token's score in beam search is what a whole-sequence pass of the same model over the source and the finished
    hypothesis gives it."""
    packed = _pack(request.getfixturevalue(checkpoint), tmp_path / "packed.pt")
    model, generator, sample = _generator_and_sample(packed, data_bin)
    lengths = sample["net_input"]["src_lengths"]
    assert lengths.min() < lengths.max()  # padding in the batch
    eos = generator.eos
    with torch.no_grad():
        hypotheses = generator.generate([model], sample)
        assert len({len(hyps[0]["tokens"]) for hyps in hypotheses}) > 1
        for i, hyps in enumerate(hypotheses):
            source = sample["net_input"]["src_tokens"][i]
            source = source[source.ne(model.encoder.padding_idx)].unsqueeze(0)
            for h in hyps:
                target = h["tokens"].unsqueeze(0)
                previous = torch.cat([target.new_full((1, 1), eos), target[:, :-1]], dim=1)
                logits = model(source, torch.tensor([source.size(1)]), previous)[0]
                scores = torch.log_softmax(logits.float(), -1).gather(-1, target.unsqueeze(-1)).view(-1)
                torch.testing.assert_close(scores, h["positional_scores"], atol=2e-3, rtol=0)


def test_fairseq_interactive_reads_a_packed_checkpoint(data_bin, fqt_deploy, tmp_path):
    packed = _pack(fqt_deploy, tmp_path / "packed.pt")
    lines = "s1 s2 s3\ns5 s7 s11 s13\n"
    outputs = []
    for checkpoint in (fqt_deploy, packed):
        proc = run_cli("fairseq-interactive", data_bin, "--user-dir", fq_plugin.__path__[0], "--path", checkpoint,
                       "--beam", "4", "--cpu", "--source-lang", "src", "--target-lang", "tgt", input_text=lines)
        outputs.append([line.split("\t") for line in proc.stdout.splitlines() if line.startswith("H-")])
    assert len(outputs[0]) == 2
    for (sid, score, hyp), (packed_sid, packed_score, packed_hyp) in zip(*outputs):
        # same hypothesis; the score differs only by float rounding (integer GEMM vs float GEMM)
        assert (sid, hyp) == (packed_sid, packed_hyp) and abs(float(score) - float(packed_score)) < 1e-4


@pytest.mark.slow  # the tiny WMT recipe test packs a paper-bucketed FQT model end to end
def test_paper_bucketing_packs_exactly_with_float_gemms_where_inputs_have_per_feature_ranges(data_bin, tmp_path):
    train(data_bin, tmp_path / "fqt", "--quant-start-update", "0", max_update=40)
    source = tmp_path / "fqt" / "checkpoint_last.pt"
    packed = _pack(source, tmp_path / "packed.pt")
    _assert_same_translations(data_bin, source, packed)
    linears = {n: m for n, m in _packed_layers(packed, data_bin).items() if isinstance(m, PackedInt8Linear)}
    # Only fc2 reads a single-range point (the ReLU output); the paper buckets the other inputs per feature.
    assert {n for n, m in linears.items() if m._input_grid() is not None} == {n for n in linears if n.endswith("fc2")}


@pytest.mark.parametrize("arch, flags, kernel", [
    ("bitnet_transformer_tiny", ["--embedding-bits", "8"], "w1a8"),
    # 8-bit inputs to the output projection too: the vocabulary projection runs the symmetric int8 GEMM
    ("bitnet_transformer_tiny", ["--embedding-bits", "8", "--output-input-bits", "8"], "w1a8"),
    ("bitnet_transformer_tiny", ["--weight-quant", "ternary"], "w1a8"),  # two planes in one kernel pass
    pytest.param("bit_transformer_tiny", [], "w1a1", marks=pytest.mark.slow),  # elastic inputs: unit-tested below
    ("bmt_transformer_tiny", ["--binarize-activations"], "w1a1"),
])
def test_packed_binarized_models_translate_like_their_qat_models(data_bin, tmp_path, arch, flags, kernel):
    train(data_bin, tmp_path / "run", "--quant-start-update", "0", *flags, arch=arch, max_update=60)
    source = tmp_path / "run" / "checkpoint_last.pt"
    packed = _pack(source, tmp_path / "packed.pt")
    _assert_same_translations(data_bin, source, packed)
    layers = _packed_layers(packed, data_bin)
    binary = [m for m in layers.values() if isinstance(m, PackedBinaryLinear)]
    assert len(binary) == 2 * 6 + 2 * 10 and all(m.input_quantizer._enabled for m in binary)
    state = _load(packed)["model"]
    assert state["encoder.layers.0.fc1.weight_bits"].dtype == torch.int32
    if "ternary" in flags:  # two sign planes sharing one scale per row: the W1A8 op sums them itself
        assert all(m.planes == 2 and m._shared_plane_scale() is not None for m in binary)
    if "--embedding-bits" in flags:  # embeddings and output projection 8-bit: everything but norms is packed
        projection = layers["decoder.output_projection"]
        assert isinstance(projection, PackedInt8Linear)
        assert _model_bytes(packed) < 0.2 * _model_bytes(source)
        per_token = projection.token_quantizer is not None and projection.token_quantizer._enabled
        assert per_token == ("--output-input-bits" in flags)


@pytest.fixture(scope="module")
def float_state(data_bin, tmp_path_factory):
    """A checkpoint saved before quantization was switched on."""
    save = tmp_path_factory.mktemp("not_quantized")
    train(data_bin, save, "--quant-start-update", "1000", max_update=5)
    return save / "checkpoint_last.pt"


def test_fq_pack_refuses_what_it_cannot_pack_and_keeps_its_input(data_bin, fqt_deploy, float_state, tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(fqt_deploy.read_bytes()[:5000])
    exists = tmp_path / "exists.pt"
    exists.write_text("keep me")
    packed = _pack(fqt_deploy, tmp_path / "packed.pt")
    cases = [((float_state, tmp_path / "a.pt"), "nothing to pack"),
             ((corrupt, tmp_path / "b.pt"), "cannot read"),
             ((fqt_deploy, fqt_deploy), "OUTPUT must differ from INPUT"),
             ((fqt_deploy, exists), "exists; pass --force")]
    for i, (args, message) in enumerate(cases):
        before = args[0].read_bytes() if args[0].exists() else None
        if i == 1:  # one case through the console script: a message, no traceback
            proc = run_cli("fq-pack", *args, check=False)
            code, stderr = proc.returncode, proc.stderr
            assert "Traceback" not in stderr
        else:
            code, stderr = run_main(pack_main, *args)
        assert code != 0 and message in stderr, (args, stderr[-2000:])
        if before is not None:
            assert args[0].read_bytes() == before
    assert exists.read_text() == "keep me"
    assert not (tmp_path / "a.pt").exists() and not (tmp_path / "b.pt").exists()

    with pytest.raises(ValueError, match="packed already"):
        pack_state(_load(packed))
    state = _load(fqt_deploy)
    state["cfg"]["model"].arch = "transformer_tiny"  # a stock fairseq model: not ours to pack
    with pytest.raises(ValueError, match="not an fq_plugin model"):
        pack_state(state)


def test_pruned_checkpoint_packs_and_translates(data_bin, fqt_deploy, tmp_path):
    train(data_bin, tmp_path / "pruned", "--task", "fq_pruning", "--restore-file", fqt_deploy, "--prune-updates",
          "3", "--prune-method", "xmax", "--prune-ratio", "0.25", "--prune-decoder", "--quant-bucketing", "weight",
          "--share-decoder-input-output-embed", max_update=0)
    source = tmp_path / "pruned" / "checkpoint_pruned.pt"
    packed = _pack(source, tmp_path / "packed.pt")
    _assert_same_translations(data_bin, source, packed)
    assert _load(packed)["model"]["decoder.layers.1.fc1.weight_codes"].shape[0] == 48  # 64 nodes less 25 %


def _calibrated(x_min, x_max):
    quantizer = ActivationQuantizer(1, 8)
    quantizer.set_enabled(True)
    quantizer.x_min.fill_(x_min)
    quantizer.x_max.fill_(x_max)
    quantizer.initialized.fill_(True)
    return quantizer.eval()


@pytest.mark.parametrize("shape", [(0, 3), (5, 0), (7, 3)])  # empty batches, all-padding steps, a real batch
def test_packed_layers_compute_the_fake_quantized_product(shape):
    torch.manual_seed(0)
    weight, bias = torch.randn(16, 40), torch.randn(16)
    weights = WeightQuantizer(8)
    weights.set_enabled(True)
    int8 = PackedInt8Linear.from_codes(pack_int8_weight(weight, weights), bias)
    int8.input_quantizer = _calibrated(-2.0, 3.0)
    x = int8.input_quantizer(torch.randn(*shape, 40))
    assert int8._input_grid() is not None
    torch.testing.assert_close(int8(x), F.linear(x, weights(weight), bias), atol=1e-4, rtol=1e-5)

    for mode, inputs in (("bitnet", TokenQuantizer("absmax8")), ("bmt", TokenQuantizer("binary")),
                         ("bit", TokenQuantizer("binary_unsigned")), ("bit", ElasticBinaryQuantizer(40))):
        binarizer = BinaryWeightQuantizer(mode)
        for q in (binarizer, inputs):
            q.set_enabled(True)
        if isinstance(inputs, ElasticBinaryQuantizer):
            inputs.initialized.fill_(True)  # alpha = 1 as if learned
        layer = PackedBinaryLinear.from_planes(pack_binary_weight(binary_planes(binarizer, weight)), 40, 16, bias,
                                               inputs.eval())
        x = torch.randn(*shape, 40).abs()
        torch.testing.assert_close(layer(x), F.linear(inputs(x), binarizer(weight), bias), atol=1e-4, rtol=1e-5)

    split = torch.randn(16, 40)
    for mode, planes in (("ternary", 2), ("split_binary", 2)):
        binarizer = BinaryWeightQuantizer(mode)
        binarizer.set_enabled(True)
        packed = pack_binary_weight(binary_planes(binarizer, weight, split if mode == "split_binary" else None))
        layer = PackedBinaryLinear.from_planes(packed, 40, 16, bias)  # float inputs: the dequantized planes
        expected = binarizer(weight) + (binarizer(split) if mode == "split_binary" else 0)
        assert layer.planes == planes
        torch.testing.assert_close(layer.dense_weight(), expected, atol=1e-6, rtol=1e-6)
        inputs = TokenQuantizer("absmax8")  # 8-bit inputs: one kernel call for both planes if they share scales
        inputs.set_enabled(True)
        layer.input_quantizer = inputs.eval()
        assert (layer._shared_plane_scale() is not None) == (mode == "ternary")
        x = torch.randn(*shape, 40)
        torch.testing.assert_close(layer(x), F.linear(inputs(x), expected, bias), atol=1e-4, rtol=1e-5)


def test_an_int8_layer_multiplies_the_codes_its_input_quantizer_would_give():
    """What lets the attention output and the ReLU skip their fake quantization before a packed int8 layer: the
    layer quantizes a raw input to the same codes as the fake-quantized one, values exactly on and half-way between
    grid points included, and says so only where it does (inference, float32, its own input quantizer)."""
    torch.manual_seed(0)
    weights = WeightQuantizer(8)
    weights.set_enabled(True)
    int8 = PackedInt8Linear.from_codes(pack_int8_weight(torch.randn(16, 40), weights), torch.randn(16)).eval()
    int8.input_quantizer = quantizer = _calibrated(-2.0, 3.0)
    step = 5.0 / 255
    x = torch.cat([torch.randn(6, 40) * 2, (-2.0 + step * torch.arange(40.0).div(2)).expand(2, 40)])  # half steps
    with torch.no_grad():
        assert int8.requantizes(quantizer, x)
        assert torch.equal(int8(x), int8(quantizer(x)))
        assert not int8.requantizes(_calibrated(-2.0, 3.0), x)  # another quantizer's grid
        assert not int8.requantizes(quantizer, x.double())
        with pytest.raises(FloatingPointError, match="NaN"):
            int8(torch.full((1, 40), float("nan")))
    assert not int8.requantizes(quantizer, x)  # gradients on: training keeps the fake quantization


def test_packing_refuses_a_weight_that_is_not_binary():
    with pytest.raises(ValueError, match="more than one magnitude"):
        pack_binary_weight([torch.randn(4, 8)])
    with pytest.raises(ValueError, match="more than one non-zero magnitude|more than one magnitude"):
        pack_binary_weight(("ternary", torch.randn(4, 8)))
