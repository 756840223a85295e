"""The 8-bit Fully Quantized Transformer through the real fairseq CLI on tiny data: float, QAT, delayed
and post-training quantization train and translate well above chance; the schedule survives a restart."""
import re
from pathlib import Path

import pytest
import torch

import fq_plugin  # noqa: F401  (allows fairseq checkpoint types in torch.load)

from helpers import GOOD_BLEU, PLUGIN_DIR, generate_bleu, run_cli, train


def _state(checkpoint):
    return torch.load(checkpoint, map_location="cpu")["model"]  # weights_only (torch's default)


def _quantizer_keys(state, suffix):
    return [k for k in state if k.endswith(suffix) and "quantizer" in k]


@pytest.fixture(scope="module")
def float_run(data_bin, tmp_path_factory):
    """A stock fairseq ``transformer`` trained with plain label-smoothed CE (loaded with our plugin)."""
    save = tmp_path_factory.mktemp("float")
    train(data_bin, save, arch="transformer_tiny", criterion="label_smoothed_cross_entropy")
    return save / "checkpoint_last.pt"


@pytest.fixture(scope="module")
def fqt_run(data_bin, tmp_path_factory):
    save = tmp_path_factory.mktemp("fqt")
    train(data_bin, save, "--quant-start-update", "0")
    return save / "checkpoint_last.pt"


def test_stock_transformer_checkpoint_translates_with_user_dir(data_bin, float_run):
    bleu, _ = generate_bleu(data_bin, float_run)
    assert bleu > GOOD_BLEU


def test_fqt_trains_quantized_and_translates(data_bin, fqt_run):
    state = _state(fqt_run)
    enabled = _quantizer_keys(state, ".enabled")
    assert len(enabled) > 50 and all(state[k].item() for k in enabled)
    for key in _quantizer_keys(state, ".initialized"):
        assert state[key].all(), f"{key} never saw data"
    bleu, _ = generate_bleu(data_bin, fqt_run)
    assert bleu > GOOD_BLEU


def test_delayed_quantization_starts_at_the_given_update(data_bin, tmp_path):
    run_dir = tmp_path / "delayed"
    train(data_bin, run_dir, "--quant-start-update", "60", "--save-interval-updates", "50",
          "--keep-interval-updates", "5")
    before = _state(next(run_dir.glob("checkpoint_*_50.pt")))
    after = _state(next(run_dir.glob("checkpoint_*_100.pt")))
    assert not any(before[k].item() for k in _quantizer_keys(before, ".enabled"))
    assert not any(before[k].any() for k in _quantizer_keys(before, ".initialized"))
    assert all(after[k].item() for k in _quantizer_keys(after, ".enabled"))
    bleu, _ = generate_bleu(data_bin, run_dir / "checkpoint_last.pt")
    assert bleu > GOOD_BLEU


@pytest.mark.parametrize("arch", ["fq_transformer_tiny", "bit_transformer_tiny"])
def test_validation_during_training_scores_the_current_weights(data_bin, tmp_path, arch):
    """fairseq's optimizers move parameters through ``p.data`` (their version counters stay put), so nothing cached
    for inference may outlive a training step: the run's last validation loss is the one fairseq-validate gives
    for the checkpoint saved at that point (whose schedule started quantization at update 20)."""
    proc = train(data_bin, tmp_path, "--quant-start-update", "20", "--validate-interval-updates", "30",
                 arch=arch, max_update=90)
    losses = re.findall(r"valid on 'valid' subset \| loss ([\d.]+)", proc.stdout + proc.stderr)
    assert len(losses) >= 3 and len(set(losses)) > 1
    check = run_cli("fairseq-validate", data_bin, "--task", "translation", "--user-dir", PLUGIN_DIR,
                    "--path", tmp_path / "checkpoint_last.pt", "--max-tokens", "2000", "--cpu")
    fresh = re.search(r"valid on 'valid' subset \| loss ([\d.]+)", check.stdout + check.stderr)
    assert fresh, check.stderr[-3000:]
    assert float(fresh.group(1)) == pytest.approx(float(losses[-1]), abs=0.0015)


def test_post_training_quantization_freezes_weights_and_calibrates(data_bin, float_run, tmp_path):
    run_dir = tmp_path / "ptq"
    train(data_bin, run_dir, "--restore-file", float_run, "--reset-optimizer", "--reset-dataloader",
          "--reset-meters", "--quant-start-update", "0", "--quant-calibration-updates", "15", max_update=15)
    float_state, ptq_state = _state(float_run), _state(run_dir / "checkpoint_last.pt")
    for key, value in float_state.items():
        assert torch.equal(ptq_state[key], value), f"{key} changed during calibration"
    assert all(ptq_state[k].all() for k in _quantizer_keys(ptq_state, ".initialized"))
    float_bleu, _ = generate_bleu(data_bin, float_run)
    ptq_bleu, _ = generate_bleu(data_bin, run_dir / "checkpoint_last.pt")
    assert ptq_bleu > GOOD_BLEU and ptq_bleu > float_bleu - 5


def test_interrupted_run_resumes_with_same_ranges_and_schedule(data_bin, tmp_path):
    run_dir = tmp_path / "run"
    args = ("--quant-start-update", "30", "--save-interval-updates", "10", "--keep-interval-updates", "20")
    train(data_bin, run_dir, *args, max_update=20)  # interrupted while still in float
    proc = train(data_bin, run_dir, *args, max_update=50)  # fairseq restarts from checkpoint_last.pt
    assert "Loaded checkpoint" in proc.stdout + proc.stderr
    enabled = {n: all(s[k].item() for k in _quantizer_keys(s, ".enabled")) for n, s in
               ((n, _state(next(run_dir.glob(f"checkpoint_*_{n}.pt")))) for n in (20, 30, 40))}
    # Updates 0-29 run in float (checkpoint 30 is saved after them); the restart does not reset the count.
    assert enabled == {20: False, 30: False, 40: True}

    # The restored model carries the saved ranges and switches exactly.
    from fairseq import checkpoint_utils
    last = run_dir / "checkpoint_last.pt"
    saved = _state(last)
    models, _ = checkpoint_utils.load_model_ensemble([str(last)], arg_overrides={"user_dir": PLUGIN_DIR})
    restored = models[0].state_dict()
    for key in _quantizer_keys(saved, ""):
        assert torch.equal(restored[key], saved[key]), key
    assert models[0].quantization_enabled


@pytest.mark.parametrize("flags, message", [
    (("--quant-bits", "9"), "bit width"),
    (("--quant-bits", "1"), "bit width"),
    (("--quant-points", "qkv,nonsense"), "unknown quantization point"),
    (("--quant-bucketing", "everything"), "unknown quantization point"),
])
def test_bad_quantization_options_fail_fast(data_bin, tmp_path, flags, message):
    proc = train(data_bin, tmp_path / "bad", *flags, check=False, max_update=1)
    assert proc.returncode != 0 and message in proc.stderr
    assert not (tmp_path / "bad" / "checkpoint_last.pt").exists()


def test_qat_criterion_refuses_a_float_architecture(data_bin, tmp_path):
    proc = train(data_bin, tmp_path / "bad", arch="transformer_tiny", check=False, max_update=1)
    assert proc.returncode != 0 and "needs a quantized model" in proc.stderr


def test_fq_checkpoint_without_user_dir_fails_clearly(data_bin, fqt_run):
    proc = run_cli("fairseq-generate", data_bin, "--path", fqt_run, "--cpu", "--gen-subset", "test",
                   check=False)
    assert proc.returncode != 0
    assert "fq_transformer" in proc.stderr or "Unsupported global" in proc.stderr


def test_user_dir_by_name_from_checkout_and_from_installed_package(data_bin, fqt_run, tmp_path):
    checkout = Path(PLUGIN_DIR).parent
    for cwd in (checkout, tmp_path):  # tmp_path has no fq_plugin/: fairseq finds the installed package
        bleu, _ = generate_bleu(data_bin, fqt_run, user_dir="fq_plugin", cwd=cwd)
        assert bleu > GOOD_BLEU


def test_restoring_a_mismatched_checkpoint_fails_clearly_and_keeps_it(data_bin, tmp_path):
    source = tmp_path / "unbucketed"
    train(data_bin, source, "--quant-bucketing", "none", max_update=2)
    before = (source / "checkpoint_last.pt").read_bytes()
    proc = train(data_bin, tmp_path / "bucketed", "--restore-file", source / "checkpoint_last.pt",
                 check=False, max_update=4)
    assert proc.returncode != 0
    assert "Cannot load model parameters from checkpoint" in proc.stderr and "size mismatch" in proc.stderr
    assert (source / "checkpoint_last.pt").read_bytes() == before


@pytest.mark.parametrize("bucketing, buckets", [("ffn_out", 64), ("none", 1)])
def test_single_point_ablation_from_flags(data_bin, tmp_path, bucketing, buckets):
    """Table 3 of seed 003: quantize one activation, with or without bucketing, by flags alone."""
    train(data_bin, tmp_path, "--quant-points", "ffn_out", "--quant-bucketing", bucketing, max_update=3)
    state = _state(tmp_path / "checkpoint_last.pt")
    ranges = _quantizer_keys(state, ".x_min")
    assert ranges and all(".fc2.output_quantizer." in k for k in ranges)
    assert all(state[k].numel() == buckets for k in ranges)
    assert not any("weight_quantizer" in k for k in state)
