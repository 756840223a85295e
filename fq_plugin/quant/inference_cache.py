"""Values derived from parameters (a quantized weight, a packed twin), kept between inference calls."""
import torch


class InferenceCache:
    """Mixin for ``nn.Module``s that keep values derived from their parameters for inference.

    An entry is rebuilt when one of its source tensors is replaced or changed in place (version counter), and
    all entries are dropped whenever the module is put in training mode: fairseq's optimizers update parameters
    through ``p.data``, which leaves the version counter unchanged, so after training steps only the
    ``train()``/``eval()`` switch of fairseq's trainer tells that the parameters moved.
    """

    def inference_cached(self, name, sources, build):
        """``build()`` (run without gradient), cached under ``name`` while ``sources`` are unchanged."""
        key = [(t, t._version) for t in sources if t is not None]
        cache = self.__dict__.setdefault("_inference_cache", {})
        entry = cache.get(name)
        if entry is None or len(entry[0]) != len(key) or any(
                t is not s or v != w for (t, v), (s, w) in zip(entry[0], key)):
            with torch.no_grad():
                entry = cache[name] = (key, build())
        return entry[1]

    def train(self, mode: bool = True):
        if mode:
            self.__dict__.pop("_inference_cache", None)
        return super().train(mode)
