"""Where beam-search decoding spends its time: the shares of the model's decoder and encoder calls and of fairseq's
search around them (timed without the profiler), then the torch profiler over fairseq's SequenceGenerator on the
same test batches of a checkpoint (float, QAT or packed), ops sorted by self CPU time; with ``--per-module``, the
wall time of each module class instead (its own time, without its children's; the hooks add a few us per call).

    python scripts/bench/profile_generate.py CHECKPOINT DATA_BIN [--batches 2] [--batch-size 64] [--threads 1]
                                             [--fixed-length L] [--per-module]
"""
import argparse
import collections
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
    parser.add_argument("--per-module", action="store_true", help="time module classes instead of torch ops")
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
        if args.per_module:
            _time_module_classes(models[0], generator, batches[1:], args.rows)
            return
        start = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for batch in batches[1:]:
                generator.generate(models, batch)
    print(f"{args.batches} batches in {time.perf_counter() - start:.2f}s (profiled)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


def _time_module_classes(model, generator, batches, rows):
    """Own wall time (children excluded) and calls of each module class over ``batches``, per decoder step."""
    spent, calls, stack = collections.defaultdict(float), collections.Counter(), []

    def enter(module, inputs):
        stack.append([time.perf_counter(), 0.0])

    def leave(module, inputs, output):
        start, children = stack.pop()
        elapsed = time.perf_counter() - start
        spent[type(module).__name__] += elapsed - children
        calls[type(module).__name__] += 1
        if stack:
            stack[-1][1] += elapsed

    handles = [h for m in model.modules() for h in (m.register_forward_pre_hook(enter), m.register_forward_hook(leave))]
    steps = [0]
    # fairseq calls decoder.forward directly (no hooks); its first layer runs once per decoder step
    handles.append(model.decoder.layers[0].register_forward_pre_hook(
        lambda module, inputs: steps.__setitem__(0, steps[0] + 1)))
    start = time.perf_counter()
    for batch in batches:
        generator.generate([model], batch)
    total = time.perf_counter() - start
    for handle in handles:
        handle.remove()
    n = max(steps[0], 1)
    print(f"{n} decoder steps in {total:.2f}s with hooks ({total / n * 1e3:.1f} ms per step); own time per class:")
    for name, seconds in sorted(spent.items(), key=lambda kv: -kv[1])[:rows]:
        print(f"  {name:40s} {seconds / n * 1e3:7.2f} ms/step  {calls[name] / n:6.1f} calls/step  "
              f"{seconds / calls[name] * 1e6:8.1f} us/call")


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
