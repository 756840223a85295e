"""LayerNorm with its numerator, denominator, quotient, gamma and output quantized (seed 003 §3.2)."""
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops  # noqa: F401  (defines the torch.ops.fq_plugin ops without the extension)
from ..quant import valid_positions
from ..quant.inference_cache import InferenceCache
from ..quant.parts import layer_norm_from_parts
from .quant_config import apply_quantizer, fused_grids, run_fused


class QuantLayerNorm(InferenceCache, nn.LayerNorm):
    """``nn.LayerNorm`` over the last dim computed as ((x - mean) / sqrt(var + eps)) * gamma + beta with
    each part fake-quantized. The denominator's gradient is never zeroed (seed 003 §3.1). In inference (eval mode,
    no gradient, calibrated ranges) one fused op computes it, in QAT and packed models alike.

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

    def _parts(self):
        return self.numerator_quantizer, self.denominator_quantizer, self.quotient_quantizer, self.output_quantizer

    def _fused_plan(self):
        """``(quantized gamma, grids, bits)`` of the fused op, or None (see ``fused_grids``)."""
        fused = fused_grids(*self._parts())
        return None if fused is None else (apply_quantizer(self.gamma_quantizer, self.weight), *fused)

    def forward(self, x):
        if not any(q._enabled for q in self._quantizers):
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        inference = not (self.training or torch.is_grad_enabled() or x.dtype != torch.float32)
        fused = self.step_cached("fused", self._fused_plan) if inference else None
        if fused is not None:  # inference: one pass (QAT and packed models alike)
            weight, grids, bits = fused
            return run_fused(torch.ops.fq_plugin.quantized_layer_norm, "LayerNorm", x, weight, self.bias, self.eps,
                             *grids, bits)
        weight = apply_quantizer(self.gamma_quantizer, self.weight)
        parts = self._parts()
        valid = valid_positions(x)
        quantizers = [None if q is None else partial(apply_quantizer, q, valid=valid) for q in parts]
        return layer_norm_from_parts(x, weight, self.bias, self.eps, *quantizers)
