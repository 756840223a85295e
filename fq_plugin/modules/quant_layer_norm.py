"""LayerNorm with its numerator, denominator, quotient, gamma and output quantized (seed 003 §3.2)."""
import torch
import torch.nn.functional as F
from torch import nn

from ..quant import valid_positions
from .quant_config import apply_quantizer


class QuantLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the last dim computed as ((x - mean) / sqrt(var + eps)) * gamma + beta with
    each part fake-quantized. The denominator's gradient is never zeroed (seed 003 §3.1).

    Args:
        dim: normalized size.
        spec: a ``QuantSpec``.
        output_point: name of the output's quantization point ('attn_ln_out', 'ffn_ln_out') or None.
        eps: as ``nn.LayerNorm``.
    """

    def __init__(self, dim, spec, output_point=None, eps=1e-5):
        super().__init__(dim, eps=eps)
        self.numerator_quantizer = spec.activation("ln_num", dim)
        self.denominator_quantizer = spec.activation("ln_den", 1, pass_clamped=True)
        self.quotient_quantizer = spec.activation("ln_quot", dim)
        self.gamma_quantizer = spec.weight("ln_gamma", matrix=False)
        self.output_quantizer = spec.activation(output_point, dim) if output_point else None
        self._quantizers = [q for q in (self.numerator_quantizer, self.denominator_quantizer,
                                        self.quotient_quantizer, self.gamma_quantizer,
                                        self.output_quantizer) if q is not None]

    def forward(self, x):
        if not any(q._enabled for q in self._quantizers):
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        valid = valid_positions(x)
        centered = x - x.mean(dim=-1, keepdim=True)
        denominator = torch.sqrt(centered.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        numerator = apply_quantizer(self.numerator_quantizer, centered, valid)
        denominator = apply_quantizer(self.denominator_quantizer, denominator, valid)
        quotient = apply_quantizer(self.quotient_quantizer, numerator / denominator, valid)
        y = quotient * apply_quantizer(self.gamma_quantizer, self.weight) + self.bias
        return apply_quantizer(self.output_quantizer, y, valid)
