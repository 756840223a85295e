"""Linear and embedding layers with fake-quantized weights (and optionally a quantized output)."""
import torch
import torch.nn.functional as F
from torch import nn

from ..quant import valid_positions
from ..quant.inference_cache import InferenceCache
from .packed_linear import PackedInt8Linear, linear_rows, pack_int8_weight
from .quant_config import apply_quantizer


class QuantLinear(InferenceCache, nn.Linear):
    """``nn.Linear`` whose weight is fake-quantized per output row; optional output quantizer.

    In inference (eval mode, no gradient) with quantized weights and an input linked to a single-range
    quantizer, or quantized per token by ``token_quantizer``, the layer computes its product from the integer
    codes, exactly as its packed form (``PackedInt8Linear``) does, so that a packed checkpoint translates like
    this one.

    Args:
        in_features, out_features, bias: as ``nn.Linear``.
        weight_quantizer: a ``WeightQuantizer`` or None (float weight).
        output_quantizer: an ``ActivationQuantizer`` for the output or None. The output is assumed
            time-major (T x B x C) for the padding mask, as everywhere inside fairseq's layers.
        token_quantizer: a per-token 8-bit ``TokenQuantizer('absmax8')`` applied to the input, or None (the
            output projection of binarized models with ``--output-input-bits 8``).
    Attributes:
        input_quantizer: the quantizer whose output this layer reads, set by the model (not saved).
    """

    input_quantizer = None

    def __init__(self, in_features, out_features, bias=True, weight_quantizer=None, output_quantizer=None,
                 token_quantizer=None):
        super().__init__(in_features, out_features, bias=bias)
        self.weight_quantizer = weight_quantizer
        self.output_quantizer = output_quantizer
        self.token_quantizer = token_quantizer

    def _integer_twin(self, x):
        """The packed form of this layer when inference can run on integer codes, else None."""
        q = self.weight_quantizer
        if self.training or torch.is_grad_enabled() or q is None or not q._enabled or x.dtype != torch.float32:
            return None
        per_token = self.token_quantizer is not None and self.token_quantizer._enabled
        if self.input_quantizer is None and not per_token:
            return None
        twin = self.inference_cached("twin", (self.weight,), lambda: PackedInt8Linear.from_codes(
            pack_int8_weight(self.weight, q), self.bias, token_quantizer=self.token_quantizer))
        twin.input_quantizer = self.input_quantizer
        return twin if per_token or twin._input_grid() is not None else None

    def forward(self, x):
        twin = self._integer_twin(x)
        if twin is not None:
            y = twin(x)
        else:
            if self.token_quantizer is not None:
                x = self.token_quantizer(x)
            y = linear_rows(x, apply_quantizer(self.weight_quantizer, self.weight), self.bias)
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
