"""Pure tensor math for quantization (torch only, no fairseq)."""
from .affine import MAX_BITS, MIN_BITS, FakeQuantSTE, affine_scale, check_bits, fake_quantize
from .padding import token_mask, valid_positions
from .quantizers import ActivationQuantizer, Quantizer, WeightQuantizer
