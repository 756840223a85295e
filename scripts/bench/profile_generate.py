"""Where beam-search decoding spends its time: torch profiler over fairseq's SequenceGenerator on a few test
batches of a checkpoint (float, QAT or packed), ops sorted by self CPU time.

    python scripts/bench/profile_generate.py CHECKPOINT DATA_BIN [--batches 2] [--batch-size 64] [--threads 1]
"""
import argparse
import time

import torch
from fairseq import checkpoint_utils
from fairseq.sequence_generator import SequenceGenerator
from torch.profiler import ProfilerActivity, profile

import fq_plugin  # noqa: F401  (registers our models; fairseq checkpoint types for the safe loader)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("data_bin")
    parser.add_argument("--batches", type=int, default=2, help="profiled batches (after one warm-up batch)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", type=int, default=25, help="ops listed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([args.checkpoint],
                                                                     arg_overrides={"data": args.data_bin})
    models = [m.eval() for m in models]
    task.load_dataset("test")
    batches = task.get_batch_iterator(task.dataset("test"), max_sentences=args.batch_size,
                                      required_batch_size_multiple=1).next_epoch_itr(shuffle=False)
    batches = [next(batches) for _ in range(args.batches + 1)]
    generator = SequenceGenerator(models, task.target_dictionary, beam_size=4, len_penalty=0.6)
    with torch.no_grad():
        generator.generate(models, batches[0])  # warm-up: caches, lazily built integer twins
        start = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for batch in batches[1:]:
                generator.generate(models, batch)
    print(f"{args.batches} batches in {time.perf_counter() - start:.2f}s (profiled)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
