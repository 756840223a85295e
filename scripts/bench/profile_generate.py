"""Where beam-search decoding spends its time: the shares of the model's decoder and encoder calls and of fairseq's
search around them (timed without the profiler), then the torch profiler over fairseq's SequenceGenerator on the
same test batches of a checkpoint (float, QAT or packed), ops sorted by self CPU time.

    python scripts/bench/profile_generate.py CHECKPOINT DATA_BIN [--batches 2] [--batch-size 64] [--threads 1]
                                             [--fixed-length L]
"""
import argparse
import time

import torch
from fairseq import checkpoint_utils
from fairseq.sequence_generator import EnsembleModel, SequenceGenerator
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
    parser.add_argument("--fixed-length", type=int, default=None,
                        help="every hypothesis exactly this many tokens (untrained models, speed only)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([args.checkpoint],
                                                                     arg_overrides={"data": args.data_bin})
    models = [m.eval() for m in models]
    task.load_dataset("test")
    batches = task.get_batch_iterator(task.dataset("test"), max_sentences=args.batch_size,
                                      required_batch_size_multiple=1).next_epoch_itr(shuffle=False)
    batches = [next(batches) for _ in range(args.batches + 1)]
    length = {} if args.fixed_length is None else dict(max_len_a=0, max_len_b=args.fixed_length,
                                                        min_len=args.fixed_length)
    generator = SequenceGenerator(models, task.target_dictionary, beam_size=4, len_penalty=0.6, **length)
    spent = {"forward_decoder": 0.0, "forward_encoder": 0.0}
    for name in spent:
        setattr(EnsembleModel, name, _timed(getattr(EnsembleModel, name), spent, name))
    with torch.no_grad():
        generator.generate(models, batches[0])  # warm-up: caches, lazily built integer twins
        spent.update(forward_decoder=0.0, forward_encoder=0.0)
        start = time.perf_counter()
        for batch in batches[1:]:
            generator.generate(models, batch)
        total = time.perf_counter() - start
        search = total - sum(spent.values())
        print(f"{args.batches} batches in {total:.2f}s: decoder {spent['forward_decoder'] / total:.0%}, encoder "
              f"{spent['forward_encoder'] / total:.0%}, beam search and the rest of fairseq {search / total:.0%}")
        start = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for batch in batches[1:]:
                generator.generate(models, batch)
    print(f"{args.batches} batches in {time.perf_counter() - start:.2f}s (profiled)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


def _timed(method, spent, name):
    """``method`` adding its wall time to ``spent[name]``."""
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            spent[name] += time.perf_counter() - start
    return wrapper


if __name__ == "__main__":
    main()
