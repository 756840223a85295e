"""The linear projection of the binarized Transformers: binary/ternary weights, an optional quantizer on its
input, BitNet's LayerNorm inside the layer and BMT's LayerNorm on its output."""
import torch
from torch import nn

from ..quant import valid_positions
from ..quant.inference_cache import InferenceCache
from .packed_linear import PackedBinaryLinear, binary_planes, linear_rows, pack_binary_weight


class BinaryLinear(InferenceCache, nn.Linear):
    """``y = OutNorm(linear(Q_x(InNorm(x)), Q_w(W) [+ Q_w(W2)]) + bias)``.

    Args:
        in_features, out_features, bias: as ``nn.Linear``.
        weight_quantizer: a ``BinaryWeightQuantizer``.
        input_quantizer: activation quantizer of the input, or None (float activations).
        input_norm: LayerNorm on the input before it is quantized (BitNet's BitLinear).
        output_norm: LayerNorm on the output (BMT: keeps the variance of binary dot products in check).
        split: hold a second weight ``weight_split`` whose binarization is added to the first one's
            (ternary weight splitting, BinaryBERT): two bit planes per matrix.

    In inference (eval mode, no gradient) with a quantized input, the product runs on the 1-bit kernels
    exactly as in the packed form (``PackedBinaryLinear``), so that a packed checkpoint translates like this one.
    """

    def __init__(self, in_features, out_features, bias=True, weight_quantizer=None, input_quantizer=None,
                 input_norm=False, output_norm=False, split=False):
        super().__init__(in_features, out_features, bias=bias)
        self.weight_quantizer = weight_quantizer
        self.input_quantizer = input_quantizer
        self.input_norm = nn.LayerNorm(in_features) if input_norm else None
        self.output_norm = nn.LayerNorm(out_features) if output_norm else None
        self.weight_split = nn.Parameter(self.weight.detach().new_zeros(self.weight.shape)) if split else None

    def quantized_weight(self):
        weight = self.weight_quantizer(self.weight)
        if self.weight_split is not None:
            weight = weight + self.weight_quantizer(self.weight_split)
        return weight

    def _integer_twin(self, x):
        """The packed form of this layer when inference can run on the 1-bit kernels, else None."""
        q = self.input_quantizer
        if (self.training or torch.is_grad_enabled() or q is None or not q._enabled
                or not self.weight_quantizer._enabled or x.dtype != torch.float32):
            return None
        return self.inference_cached("twin", (self.weight, self.weight_split), lambda: PackedBinaryLinear.from_planes(
            pack_binary_weight(binary_planes(self.weight_quantizer, self.weight, self.weight_split)),
            self.in_features, self.out_features, self.bias, q))

    def forward(self, x):
        if self.input_norm is not None:
            x = self.input_norm(x)
        twin = self._integer_twin(x)
        if twin is not None:
            y = twin(x)
            return self.output_norm(y) if self.output_norm is not None else y
        if self.input_quantizer is not None:
            x = self.input_quantizer(x, valid_positions(x))
        y = linear_rows(x, self.quantized_weight(), self.bias)
        return self.output_norm(y) if self.output_norm is not None else y

    # FFN pruning protocol: keep only some output features (fc1) or input features (fc2).
    def select_output_features(self, keep):
        self.weight = nn.Parameter(self.weight.data[keep].clone())
        if self.weight_split is not None:
            self.weight_split = nn.Parameter(self.weight_split.data[keep].clone())
        if self.bias is not None:
            self.bias = nn.Parameter(self.bias.data[keep].clone())
        if self.output_norm is not None:
            _select_norm(self.output_norm, keep)
        self.out_features = len(keep)

    def select_input_features(self, keep):
        self.weight = nn.Parameter(self.weight.data[:, keep].clone())
        if self.weight_split is not None:
            self.weight_split = nn.Parameter(self.weight_split.data[:, keep].clone())
        if self.input_norm is not None:
            _select_norm(self.input_norm, keep)
        if self.input_quantizer is not None:
            self.input_quantizer.select_buckets(keep)
        self.in_features = len(keep)


def _select_norm(norm, keep):
    norm.weight = nn.Parameter(norm.weight.data[keep].clone())
    norm.bias = nn.Parameter(norm.bias.data[keep].clone())
    norm.normalized_shape = (len(keep),)
