"""Values derived from parameters (a quantized weight, a packed twin), kept between inference calls."""
import contextlib
import threading

import torch


class _Trust(threading.local):
    on = False  # see trusted_inference_caches; per thread, as searches in other threads are not its steps


_trust = _Trust()


@contextlib.contextmanager
def trusted_inference_caches(trusted: bool = True):
    """While active (and ``trusted``), cached entries are returned without looking at their sources.

    For the decoding steps of one beam search after its first: nothing changes the parameters between the steps of
    a search, and checking (a version read per source tensor, ~300 per step of a Transformer-base decoder, and the
    calls that gather them) is a measurable share of a batch-1 step. Missing entries are built as usual.
    """
    previous = _trust.on
    _trust.on = previous or trusted
    try:
        yield
    finally:
        _trust.on = previous


class InferenceCache:
    """Mixin for ``nn.Module``s that keep values derived from their parameters for inference.

    An entry is rebuilt when one of its source tensors is replaced or changed in place (version counter), and
    all entries are dropped whenever the module is put in training mode: fairseq's optimizers update parameters
    through ``p.data``, which leaves the version counter unchanged, so after training steps only the
    ``train()``/``eval()`` switch of fairseq's trainer tells that the parameters moved.
    """

    def inference_cached(self, name, sources, build):
        """``build()`` (run without gradient), cached under ``name`` while ``sources`` are unchanged."""
        cache = self.__dict__.setdefault("_inference_cache", {})
        entry = cache.get(name)
        if entry is not None and _trust.on:
            return entry[1]
        key = [(t, t._version) for t in sources if t is not None]
        if entry is None or len(entry[0]) != len(key) or any(
                t is not s or v != w for (t, v), (s, w) in zip(entry[0], key)):
            with torch.no_grad():
                entry = cache[name] = (key, build())
        return entry[1]

    def step_cached(self, name, build):
        """``build()`` on every call, except in trusted decoding steps, which reuse the value of the last call:
        for values gathered from several cached parts (a layer's quantization grids), cheaper built than checked."""
        cache = self.__dict__.setdefault("_inference_cache", {})
        entry = cache.get(name)
        if entry is not None and _trust.on:
            return entry[1]
        value = build()
        cache[name] = (None, value)
        return value

    def train(self, mode: bool = True):
        if mode:
            self.__dict__.pop("_inference_cache", None)
        return super().train(mode)
