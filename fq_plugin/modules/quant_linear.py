"""Linear and embedding layers with fake-quantized weights (and optionally a quantized output)."""
import torch.nn.functional as F
from torch import nn

from ..quant import valid_positions
from .quant_config import apply_quantizer


class QuantLinear(nn.Linear):
    """``nn.Linear`` whose weight is fake-quantized per output row; optional output quantizer.

    Args:
        in_features, out_features, bias: as ``nn.Linear``.
        weight_quantizer: a ``WeightQuantizer`` or None (float weight).
        output_quantizer: an ``ActivationQuantizer`` for the output or None. The output is assumed
            time-major (T x B x C) for the padding mask, as everywhere inside fairseq's layers.
    """

    def __init__(self, in_features, out_features, bias=True, weight_quantizer=None, output_quantizer=None):
        super().__init__(in_features, out_features, bias=bias)
        self.weight_quantizer = weight_quantizer
        self.output_quantizer = output_quantizer

    def forward(self, x):
        y = F.linear(x, apply_quantizer(self.weight_quantizer, self.weight), self.bias)
        if self.output_quantizer is not None:
            y = self.output_quantizer(y, valid_positions(y))
        return y

    def select_output_features(self, keep):
        """Keep only the output features ``keep`` (LongTensor): weight rows, bias entries and the output
        quantizer's per-feature buckets (FFN node pruning). The weight quantizer is stateless."""
        self.weight = nn.Parameter(self.weight.detach()[keep].clone(), requires_grad=self.weight.requires_grad)
        if self.bias is not None:
            self.bias = nn.Parameter(self.bias.detach()[keep].clone(), requires_grad=self.bias.requires_grad)
        if self.output_quantizer is not None:
            self.output_quantizer.select_buckets(keep)
        self.out_features = len(keep)

    def select_input_features(self, keep):
        """Keep only the input features ``keep`` (LongTensor): weight columns (FFN node pruning)."""
        self.weight = nn.Parameter(self.weight.detach()[:, keep].clone(), requires_grad=self.weight.requires_grad)
        self.in_features = len(keep)


class QuantEmbedding(nn.Embedding):
    """``nn.Embedding`` whose table is fake-quantized per row (one range per token vector)."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, weight_quantizer=None):
        super().__init__(num_embeddings, embedding_dim, padding_idx=padding_idx)
        self.weight_quantizer = weight_quantizer

    def forward(self, tokens):
        weight = apply_quantizer(self.weight_quantizer, self.weight)
        return F.embedding(tokens, weight, self.padding_idx)
