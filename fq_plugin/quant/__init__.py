"""Pure tensor math for quantization (torch only, no fairseq)."""
from .affine import MAX_BITS, MIN_BITS, check_bits, fake_quantize
from .padding import token_mask, valid_positions
from .quantizers import ActivationQuantizer, Quantizer, WeightQuantizer

__all__ = ["MAX_BITS", "MIN_BITS", "check_bits", "fake_quantize", "token_mask", "valid_positions",
           "ActivationQuantizer", "Quantizer", "WeightQuantizer"]
