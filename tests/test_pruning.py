"""FFN node pruning (seed 003 §4.4) through the real fairseq CLI: ``fairseq-train --task fq_pruning`` on a tiny
trained fq_transformer, then ``fairseq-generate`` and ``fairseq-train`` fine-tuning on the pruned checkpoint with
no extra options; plus unit tests of the node-removal protocol."""
import re
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import fq_plugin  # noqa: F401  (allows fairseq checkpoint types in torch.load)
from fq_plugin.models.ffn_pruning import fixed_prune_mask, l1_scores, parse_ffn_dims, prune_ffn
from fq_plugin.modules.quant_activation import QuantActivation
from fq_plugin.modules.quant_linear import QuantLinear
from fq_plugin.quant import ActivationQuantizer, WeightQuantizer
from fq_plugin.tasks.fq_pruning import check_pruning_config

from helpers import GOOD_BLEU, generate_bleu, run_cli, train, train_args

FFN = 64  # fq_transformer_tiny: 2+2 layers, FFN 64
DEAD = [3, 17, 30, 41, 60]  # nodes forced to be exactly zero on all data in the dead-node tests


def _load(path):
    return torch.load(path, map_location="cpu")  # weights_only (torch's default)


def _prune(data, restore, save_dir, *extra, check=True):
    """``fairseq-train --task fq_pruning`` as a user types it: no --max-update, no --reset-* options."""
    return train(data, save_dir, "--task", "fq_pruning", "--restore-file", restore, "--prune-updates", "3", *extra,
                 max_update=0, check=check)


def _fc1(state, side, i):
    return state["model"][f"{side}.layers.{i}.fc1.weight"]


@pytest.fixture(scope="module")
def base(data_bin, tmp_path_factory):
    """A tiny 8-bit FQT model trained with quantization from the first update."""
    save = tmp_path_factory.mktemp("base")
    train(data_bin, save, "--quant-start-update", "0")
    return save / "checkpoint_last.pt"


@pytest.fixture(scope="module")
def adaptive(data_bin, base, tmp_path_factory):
    """Adaptive pruning with a z large enough to remove nodes of this small, fully used model; saves the
    x_max statistics."""
    save = tmp_path_factory.mktemp("adaptive")
    proc = _prune(data_bin, base, save, "--prune-z", "4", "--prune-decoder", "--prune-stats", save / "stats.pt")
    return save / "checkpoint_pruned.pt", proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def zero_z(data_bin, base, adaptive, tmp_path_factory):
    """z = 0, on the statistics saved by the adaptive run: prunes nothing."""
    save = tmp_path_factory.mktemp("z0")
    stats = adaptive[0].parent / "stats.pt"
    proc = _prune(data_bin, base, save, "--prune-z", "0", "--prune-decoder", "--prune-stats", stats)
    assert f"read FFN x_max statistics from {stats}" in proc.stdout + proc.stderr
    return save / "checkpoint_pruned.pt"


def test_zero_z_prunes_nothing_and_changes_no_weight_or_range(base, zero_z):
    before, after = _load(base), _load(zero_z)
    assert after["cfg"]["model"].encoder_ffn_dims == f"{FFN},{FFN}"
    assert after["cfg"]["model"].decoder_ffn_dims == f"{FFN},{FFN}"
    assert before["model"].keys() == after["model"].keys()
    for key, value in before["model"].items():  # frozen weights, no optimizer step, quantizer ranges kept
        assert torch.equal(after["model"][key], value), key
    assert "last_optimizer_state" not in after


def test_adaptive_pruning_shrinks_checkpoint_and_records_sizes(base, zero_z, adaptive):
    pruned, log = adaptive
    before, after = _load(base), _load(pruned)
    removed = 0
    for side in ("encoder", "decoder"):
        sizes = [_fc1(after, side, i).shape[0] for i in range(2)]
        assert getattr(after["cfg"]["model"], f"{side}_ffn_dims") == ",".join(map(str, sizes))
        for i, size in enumerate(sizes):
            assert 0 < size <= FFN
            assert re.search(rf"{side} layer {i}: {FFN} -> {size} FFN nodes", log), log[-3000:]
            # the kept nodes are rows of the original fc1 / columns of fc2, unchanged and in order
            w1, w1p = _fc1(before, side, i), _fc1(after, side, i)
            rows = [next(r for r in range(FFN) if torch.equal(w1[r], row)) for row in w1p]
            assert rows == sorted(rows)
            w2 = before["model"][f"{side}.layers.{i}.fc2.weight"]
            assert torch.equal(after["model"][f"{side}.layers.{i}.fc2.weight"], w2[:, rows])
            removed += FFN - size
    assert removed > 0
    params = sum(v.numel() for k, v in after["model"].items() if "quantizer" not in k)
    full = sum(v.numel() for k, v in before["model"].items() if "quantizer" not in k)
    assert full - params == removed * (2 * 64 + 1)  # fc1 row + bias + fc2 column per node, d_model 64
    assert pruned.stat().st_size < zero_z.stat().st_size
    assert re.search(r"parameters \d+ -> \d+", log)


def test_pruned_checkpoint_translates_and_finetunes_without_extra_options(data_bin, adaptive, tmp_path):
    pruned, _ = adaptive
    # further fine-tuning with the ordinary translation task restores the pruned shapes by itself
    train(data_bin, tmp_path, "--restore-file", pruned, max_update=8)
    tuned, sizes = _load(tmp_path / "checkpoint_last.pt"), _load(pruned)
    for side in ("encoder", "decoder"):
        for i in range(2):
            assert _fc1(tuned, side, i).shape == _fc1(sizes, side, i).shape
    assert tuned["optimizer_history"][-1]["num_updates"] == 8
    bleu, _ = generate_bleu(data_bin, tmp_path / "checkpoint_last.pt")
    assert bleu > GOOD_BLEU


def _with_dead_nodes(base, path, quantized):
    """Copy of ``base`` where encoder nodes DEAD output exactly 0 on all data (fc1 row 0, bias -10).
    In the 8-bit model their fc2 columns are zeroed too: fc2's weight is quantized with the min/max of
    each row, and removing a column that holds a row's extreme would change that row's 8-bit grid."""
    state = _load(base)
    model = state["model"]
    for i in range(2):
        model[f"encoder.layers.{i}.fc1.weight"][DEAD] = 0.0
        model[f"encoder.layers.{i}.fc1.bias"][DEAD] = -10.0
        if quantized:
            model[f"encoder.layers.{i}.fc2.weight"][:, DEAD] = 0.0
    for key in model:
        if key.endswith("quantizer.enabled"):
            model[key] = torch.tensor(quantized)
    torch.save(state, path)
    return path


@pytest.mark.parametrize("quantized, method", [(True, ["--prune-method", "adaptive"]),
                                               (False, ["--prune-method", "xmax", "--prune-ratio", str(5 / FFN)])],
                         ids=["8bit-adaptive", "float-xmax"])
def test_pruning_dead_nodes_leaves_translations_identical(data_bin, base, tmp_path, quantized, method):
    """Adaptive pruning (z = 0.025) and a fixed ratio by x_max equal to the dead share both remove exactly
    the dead nodes; the pruned model translates exactly like the unpruned one."""
    dead = _with_dead_nodes(base, tmp_path / "dead.pt", quantized)
    _prune(data_bin, dead, tmp_path / "pruned", *method)
    pruned = tmp_path / "pruned" / "checkpoint_pruned.pt"
    state, original = _load(pruned), _load(dead)
    keep = [n for n in range(FFN) if n not in DEAD]
    for i in range(2):
        assert torch.equal(_fc1(state, "encoder", i), _fc1(original, "encoder", i)[keep])
        assert _fc1(state, "decoder", i).shape[0] == FFN  # decoder not pruned without --prune-decoder
    enabled = [v.item() for k, v in state["model"].items() if k.endswith("quantizer.enabled")]
    assert enabled and all(e == quantized for e in enabled)  # validation did not switch quantization
    bleu_dead, hyps_dead = generate_bleu(data_bin, dead)
    bleu_pruned, hyps_pruned = generate_bleu(data_bin, pruned)
    assert bleu_dead > GOOD_BLEU and len(hyps_dead) > 90
    assert hyps_pruned == hyps_dead and bleu_pruned == bleu_dead


def test_fixed_ratio_by_l1_norm_removes_the_smallest_nodes(data_bin, base, tmp_path):
    _prune(data_bin, base, tmp_path, "--prune-method", "l1", "--prune-ratio", "0.25", "--prune-decoder")
    state, original = _load(tmp_path / "checkpoint_pruned.pt"), _load(base)
    for side in ("encoder", "decoder"):
        for i in range(2):
            layer = nn.Module()
            layer.fc1, layer.fc2 = nn.Linear(64, FFN), nn.Linear(FFN, 64)
            prefix = f"{side}.layers.{i}."
            layer.load_state_dict({k[len(prefix):]: v for k, v in original["model"].items()
                                   if k.startswith(prefix + "fc") and "quantizer" not in k})
            keep = torch.nonzero(~fixed_prune_mask(l1_scores(layer), 0.25)).squeeze(1)
            assert keep.numel() == FFN - 16
            assert torch.equal(_fc1(state, side, i), _fc1(original, side, i)[keep])


def test_pruning_every_node_is_refused(data_bin, base, tmp_path):
    proc = _prune(data_bin, base, tmp_path, "--prune-z", "1000", check=False)
    assert proc.returncode != 0
    assert "would remove all 64 FFN nodes of encoder layer 0" in proc.stderr + proc.stdout
    assert not (tmp_path / "checkpoint_pruned.pt").exists()


def test_statistics_of_another_model_are_refused(data_bin, base, tmp_path):
    torch.save({"encoder": [torch.ones(32), torch.ones(32)]}, tmp_path / "stats.pt")
    proc = _prune(data_bin, base, tmp_path, "--prune-stats", tmp_path / "stats.pt", check=False)
    assert proc.returncode != 0
    assert "statistics are only valid for the model they were collected on" in proc.stderr + proc.stdout


@pytest.mark.parametrize("extra, message", [
    (["--prune-method", "magnitude"], "invalid choice"),
    (["--prune-method", "l1"], "needs --prune-ratio in (0, 1)"),
    (["--prune-ratio", "0.1"], "--prune-ratio is for --prune-method l1/xmax"),
])
def test_bad_pruning_options_fail_fast(data_bin, base, tmp_path, extra, message):
    proc = _prune(data_bin, base, tmp_path, *extra, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and message in out, out[-2000:]
    assert "Start iterating over samples" not in out and "Preparing to load checkpoint" not in out


def test_check_pruning_config_rejects_bad_values():
    good = dict(prune_method="adaptive", prune_z=0.025, prune_ratio=0.0, prune_updates=300)
    check_pruning_config(SimpleNamespace(**good))
    for change, message in (({"prune_z": -0.5}, "--prune-z must be >= 0"),
                            ({"prune_updates": 0}, "--prune-updates must be >= 1"),
                            ({"prune_method": "l1", "prune_ratio": -0.1}, "needs --prune-ratio in"),
                            ({"prune_method": "xmax", "prune_ratio": 1.0}, "needs --prune-ratio in (0, 1)")):
        with pytest.raises(ValueError, match=re.escape(message)):
            check_pruning_config(SimpleNamespace(**{**good, **change}))


def test_bad_ffn_dims_fail_fast(data_bin, tmp_path):
    proc = run_cli("fairseq-train", *train_args(data_bin, tmp_path, "--encoder-ffn-dims", "32"), check=False)
    assert proc.returncode != 0 and "--encoder-ffn-dims: 1 sizes given for 2 layers" in proc.stdout + proc.stderr


def test_pruning_needs_a_model_that_records_ffn_sizes(data_bin, tmp_path):
    proc = run_cli("fairseq-train", *train_args(data_bin, tmp_path, "--task", "fq_pruning", arch="transformer_tiny",
                                                criterion="label_smoothed_cross_entropy"), check=False)
    assert proc.returncode != 0 and "needs a Transformer that records its pruned FFN sizes" in proc.stdout + proc.stderr


# ---- unit tests of the node-removal protocol ----

def _ffn(quantized: bool):
    layer = nn.Module()
    if quantized:
        layer.fc1 = QuantLinear(8, 6, weight_quantizer=WeightQuantizer(8))
        layer.activation_fn = QuantActivation(torch.relu, ActivationQuantizer(6, unsigned=True))
        layer.fc2 = QuantLinear(6, 8, weight_quantizer=WeightQuantizer(8), output_quantizer=ActivationQuantizer(8))
        for module in layer.modules():
            if hasattr(module, "set_enabled"):
                module.set_enabled(True)
    else:
        layer.fc1, layer.activation_fn, layer.fc2 = nn.Linear(8, 6), torch.relu, nn.Linear(6, 8)
    with torch.no_grad():
        layer.fc1.weight[[1, 4]] = 0.0
        layer.fc1.bias[[1, 4]] = -1.0  # nodes 1 and 4 are dead
        layer.fc2.weight[:, [1, 4]] = 0.0
    return layer


def _run(layer, x):
    return layer.fc2(layer.activation_fn(layer.fc1(x)))


@pytest.mark.parametrize("quantized", [True, False])
def test_prune_ffn_removes_rows_columns_and_buckets(quantized):
    torch.manual_seed(0)
    layer, x = _ffn(quantized), torch.randn(5, 3, 8)
    if quantized:  # calibrate the ranges once, then freeze them
        layer.train()
        _run(layer, x)
        layer.eval()
    expected = _run(layer, x)
    old_weight = layer.fc1.weight
    keep = torch.tensor([0, 2, 3, 5])
    prune_ffn(layer, keep)
    assert layer.fc1.weight.shape == (4, 8) and layer.fc1.bias.shape == (4,) and layer.fc2.weight.shape == (8, 4)
    assert layer.fc1.out_features == 4 and layer.fc2.in_features == 4
    assert isinstance(layer.fc1.weight, nn.Parameter) and layer.fc1.weight is not old_weight
    if quantized:
        quantizer = layer.activation_fn.quantizer
        assert quantizer.num_buckets == 4 and quantizer.x_max.shape == (4,)
        assert {k: v.shape for k, v in layer.state_dict().items()}["activation_fn.quantizer.x_max"] == (4,)
    # the removed nodes contributed exact zeros; only the summation order of fc2 may differ (float rounding)
    torch.testing.assert_close(_run(layer, x), expected, rtol=1e-6, atol=1e-6)


def test_prune_ffn_rejects_removing_every_node_or_bad_indices():
    layer = _ffn(False)
    with pytest.raises(ValueError, match="cannot lose every node"):
        prune_ffn(layer, torch.tensor([], dtype=torch.long))
    with pytest.raises(ValueError, match="distinct node indices"):
        prune_ffn(layer, torch.tensor([0, 0, 7]))


def test_parse_ffn_dims():
    assert parse_ffn_dims("", 2, 64, "--encoder-ffn-dims") is None
    assert parse_ffn_dims("60,12", 2, 64, "--encoder-ffn-dims") == [60, 12]
    for bad, message in (("60", "1 sizes given for 2 layers"), ("60,0", "between 1 and"), ("60,65", "between 1 and"),
                         ("a,b", "comma list of integers")):
        with pytest.raises(ValueError, match=message):
            parse_ffn_dims(bad, 2, 64, "--encoder-ffn-dims")


def test_pruning_task_reads_batches_without_a_prefetch_thread(data_bin):
    """fairseq's trainer asks for a --data-buffer-size prefetch thread; the pruning task, whose runs end a few updates
    after they start, reads batches in the main thread instead."""
    from fairseq.data.iterators import BufferedIterator
    from fq_plugin.tasks.fq_pruning import FQPruningConfig, FQPruningTask
    task = FQPruningTask.setup_task(FQPruningConfig(data=str(data_bin), dataset_impl="mmap", train_subset="train",
                                                    required_seq_len_multiple=1))
    task.load_dataset("valid")
    epoch = task.get_batch_iterator(task.dataset("valid"), max_tokens=2000, data_buffer_size=10).next_epoch_itr()
    assert next(epoch)["net_input"]["src_tokens"].numel() > 0
    assert not isinstance(epoch._itr, BufferedIterator)

