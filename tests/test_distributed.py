"""Quantization ranges stay identical on every data-parallel worker."""
import socket
import subprocess

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fq_plugin.quant import ActivationQuantizer
from helpers import BIN, GOOD_BLEU, cli_env, generate_bleu, train_args


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, port, results):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.manual_seed(rank)  # each worker sees different data
    quantizer = ActivationQuantizer(num_buckets=4)
    quantizer.set_enabled(True)
    quantizer.train()
    for step in range(3):
        x = torch.randn(5, 2, 4) * (rank + 1) * (step + 1)
        valid = torch.ones(5, 2, 1, dtype=torch.bool)
        if rank == 1 and step == 1:
            valid[:] = False  # an all-padding batch on one worker only
        quantizer(x, valid)
    results[rank] = (quantizer.x_min.clone(), quantizer.x_max.clone())
    dist.destroy_process_group()


def test_ranges_are_reduced_over_workers():
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(_free_port(), results), nprocs=2)
    (min0, max0), (min1, max1) = results[0], results[1]
    assert torch.equal(min0, min1) and torch.equal(max0, max1)


@pytest.mark.slow  # two fairseq-train workers: 1.5 min; the range all-reduce is unit-tested
def test_two_worker_qat_through_fairseq_train(data_bin, tmp_path):
    port = _free_port()
    save = tmp_path / "ddp"
    command = [str(BIN / "fairseq-train"), *train_args(
        data_bin, save, "--distributed-backend", "gloo", "--distributed-world-size", "2",
        "--distributed-init-method", f"tcp://127.0.0.1:{port}", "--distributed-no-spawn",
        "--ddp-backend", "legacy_ddp")]
    procs = [subprocess.Popen(command + ["--distributed-rank", str(rank)], env=cli_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-4000:]
    assert "distributed init (rank 1)" in outputs[0] + outputs[1]
    bleu, _ = generate_bleu(data_bin, save / "checkpoint_last.pt")
    assert bleu > GOOD_BLEU
