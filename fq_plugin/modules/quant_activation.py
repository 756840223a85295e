"""Small wrappers that put a quantizer after an activation function or before a dropout."""
from torch import nn

from ..quant import valid_positions


class QuantActivation(nn.Module):
    """``fn(x)`` followed by its quantizer (for the FFN ReLU: x_min fixed to 0, before dropout).

    Attributes:
        consumer: the packed layer that reads the output (set by the model, not saved), or None; when it multiplies
            the quantizer's codes of it (``PackedInt8Linear.requantizes``), the fake quantization is skipped.
    """

    consumer = None

    def __init__(self, fn, quantizer):
        super().__init__()
        self.fn = fn
        self.quantizer = quantizer

    def forward(self, x):
        y = self.fn(x)
        if self.consumer is not None and self.consumer.requantizes(self.quantizer, y):
            return y
        return self.quantizer(y, valid_positions(y))

    def select_features(self, keep):
        """Keep only the per-feature quantizer buckets ``keep`` (LongTensor; FFN node pruning)."""
        if hasattr(self.quantizer, "select_buckets"):
            self.quantizer.select_buckets(keep)


class QuantizeBeforeDropout(nn.Module):
    """Quantizes its input, then applies the wrapped dropout (seed 003 §3.4: quantize before dropout).

    Used for the embedding + positions sum, which fairseq computes batch-major (B x T x C).
    """

    def __init__(self, quantizer, dropout):
        super().__init__()
        self.quantizer = quantizer
        self.dropout = dropout

    @property
    def p(self):
        return self.dropout.p

    def forward(self, x):
        return self.dropout(self.quantizer(x, valid_positions(x, time_major=False)))
