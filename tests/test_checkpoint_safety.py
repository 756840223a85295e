"""Checkpoints load with torch's safe loader only: fairseq's own types are allowed, code never runs."""
import os
import subprocess
import sys

import torch

import fq_plugin  # noqa: F401  (registers the allowed types)
from helpers import run_cli


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_is_refused_and_runs_nothing(data_bin, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"args": None, "cfg": {"payload": _Payload(marker)}, "model": {}}, evil)
    proc = run_cli("fairseq-generate", data_bin, "--user-dir", "fq_plugin", "--path", evil, "--cpu",
                   check=False, cwd=tmp_path)
    assert proc.returncode != 0
    assert "Unsupported global" in proc.stderr or "weights_only" in proc.stderr.lower()
    assert not marker.exists()


def test_loading_never_disables_weights_only():
    source = subprocess.run(["grep", "-rn", "weights_only=False\\|TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD",
                             os.path.dirname(fq_plugin.__file__)], capture_output=True, text=True)
    assert source.stdout == ""


def test_checkpoints_of_both_model_kinds_need_only_the_allowed_types(data_bin, tmp_path):
    from fq_plugin.serialization import FAIRSEQ_CHECKPOINT_TYPES
    from helpers import train
    for arch, criterion in (("transformer_tiny", "label_smoothed_cross_entropy"),
                            ("fq_transformer_tiny", "qat_label_smoothed_cross_entropy")):
        train(data_bin, tmp_path / arch, arch=arch, criterion=criterion, max_update=2)
        for name in ("checkpoint_last.pt", "checkpoint_best.pt"):
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / arch / name)
            allowed = {f"{t.__module__}.{t.__qualname__}" for t in FAIRSEQ_CHECKPOINT_TYPES}
            assert set(unsafe) <= allowed, unsafe


def test_fairseq_checkpoint_types_are_exactly_allowed(tmp_path):
    import argparse
    path = tmp_path / "ckpt.pt"
    torch.save({"args": argparse.Namespace(arch="transformer"), "model": {"w": torch.ones(1)}}, path)
    assert torch.load(path)["args"].arch == "transformer"
    code = ("import torch, argparse, sys; torch.load(sys.argv[1])")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert proc.returncode != 0 and "argparse.Namespace" in proc.stderr  # torch alone refuses it
