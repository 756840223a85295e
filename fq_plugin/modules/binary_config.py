"""Options of the binarized Transformers (BMT, BitNet, BiT) and the spec that builds their layers."""
from dataclasses import dataclass, field
from typing import Optional

from fairseq.dataclass import ChoiceEnum, FairseqDataclass

from ..quant import WeightQuantizer
from ..quant.binary_quantizers import BinaryWeightQuantizer, ElasticBinaryQuantizer, TokenQuantizer
from .binary_linear import BinaryLinear
from .quant_config import QuantSpec

METHODS = ("bmt", "bitnet", "bit")
WEIGHT_QUANT = ("binary", "ternary", "split_binary")
ACTIVATION_BITS = (32, 8, 1)
EMBEDDING_BITS = (32, 8)
OUTPUT_INPUT_BITS = (32, 8)
# Activation precision each method is published with (BMT's default is its weight-only model).
DEFAULT_ACTIVATION_BITS = {"bmt": 32, "bitnet": 8, "bit": 1}
BMT_ONLY = ("no_extra_layernorm", "no_attention_residual")


@dataclass
class BinaryConfig(FairseqDataclass):
    """Command-line options of the binarized Transformers."""

    weight_quant: ChoiceEnum(WEIGHT_QUANT) = field(
        default="binary",
        metadata={"help": "binary: the method's own 1-bit weights; ternary: TWN {-a,0,a} weights (BinaryBERT); "
                          "split_binary: two 1-bit planes per matrix, as produced by fq-split from a ternary model"})
    activation_bits: Optional[int] = field(
        default=None,
        metadata={"help": "precision of the inputs of every projection: 32 (float), 8 (per-token absmax) or 1 "
                          "(the method's binarizer); default: bmt 32, bitnet 8, bit 1"})
    binarize_activations: bool = field(
        default=False, metadata={"help": "1-bit activations, including the attention operands (= --activation-bits 1)"})
    no_extra_layernorm: bool = field(
        default=False, metadata={"help": "BMT: drop the LayerNorm on the output of each binarized projection"})
    no_attention_residual: bool = field(
        default=False, metadata={"help": "BMT: drop the residual around the attention output projection"})
    no_binarize_attention: bool = field(
        default=False, metadata={"help": "with 1-bit activations, keep Q, K, V and the attention probabilities "
                                         "in float (binarize only the projection inputs)"})
    alpha_lr_scale: float = field(
        default=1.0, metadata={"help": "BiT: learning-rate multiplier of the elastic activation scales alpha"})
    embedding_bits: int = field(
        default=32,
        metadata={"help": "32: float embeddings and output projection (as the papers); 8: fake-quantize them per "
                          "row to 8 bits while training, so that fq-pack stores them in 8 bits exactly"})
    output_input_bits: int = field(
        default=32,
        metadata={"help": "32: float input to the output projection (as the papers); 8: per-token absmax 8-bit "
                          "(BitNet's activation quantizer), so that with --embedding-bits 8 the packed model runs the "
                          "vocabulary projection as an int8 GEMM"})


def resolve_binary_args(args, method):
    """Fill per-method defaults into ``args`` and reject combinations that make no sense (fail fast)."""
    if method not in METHODS:
        raise ValueError(f"unknown binarization method {method!r}")
    args.binary_method = method
    bits = getattr(args, "activation_bits", None)
    if getattr(args, "binarize_activations", False):
        if bits not in (None, 1):
            raise ValueError(f"--binarize-activations contradicts --activation-bits {bits}")
        bits = 1
    bits = DEFAULT_ACTIVATION_BITS[method] if bits is None else int(bits)
    if bits not in ACTIVATION_BITS:
        raise ValueError(f"--activation-bits must be one of {ACTIVATION_BITS}, got {bits}")
    if method == "bitnet" and bits == 1:
        raise ValueError("BitNet quantizes activations to 8 bits (or 32 for weight-only); "
                         "for 1-bit activations use bmt_transformer or bit_transformer")
    args.activation_bits = bits
    if getattr(args, "weight_quant", "binary") not in WEIGHT_QUANT:
        raise ValueError(f"--weight-quant must be one of {WEIGHT_QUANT}, got {args.weight_quant!r}")
    if method != "bmt":
        used = [name for name in BMT_ONLY if getattr(args, name, False)]
        if used:
            flags = ", ".join("--" + name.replace("_", "-") for name in used)
            raise ValueError(f"{flags} only apply to bmt_transformer (BMT's architectural changes)")
    if getattr(args, "embedding_bits", 32) not in EMBEDDING_BITS:
        raise ValueError(f"--embedding-bits must be one of {EMBEDDING_BITS}, got {args.embedding_bits}")
    output_bits = getattr(args, "output_input_bits", 32)
    if output_bits not in OUTPUT_INPUT_BITS:
        raise ValueError(f"--output-input-bits must be one of {OUTPUT_INPUT_BITS}, got {output_bits}")
    if output_bits == 8 and getattr(args, "embedding_bits", 32) != 8:
        raise ValueError("--output-input-bits 8 needs --embedding-bits 8: the int8 vocabulary projection multiplies "
                         "8-bit inputs with 8-bit weights")
    if getattr(args, "alpha_lr_scale", 1.0) <= 0:
        raise ValueError("--alpha-lr-scale must be > 0")


class BinarySpec:
    """Builds the layers of a binarized Transformer; same interface as ``QuantSpec`` so fq_transformer's
    layers and attention take either. Embeddings, positions, the output projection and LayerNorms stay
    float (seed 001 keeps embeddings and the output layer in high precision; we do so for all methods),
    except the embeddings and output projection with ``--embedding-bits 8`` (for small packed files) and the
    output projection's input with ``--output-input-bits 8`` (for an int8 vocabulary projection)."""

    points = frozenset()  # none of the 8-bit FQT points

    def __init__(self, method, weight_quant="binary", activation_bits=32, extra_layernorm=True,
                 attention_residual=True, binarize_attention=True, alpha_lr_scale=1.0, embedding_bits=32,
                 output_input_bits=32):
        self.method = method
        self.weight_mode = method if weight_quant == "binary" else weight_quant
        self.split = weight_quant == "split_binary"
        self.activation_bits = activation_bits
        self.extra_layernorm = method == "bmt" and extra_layernorm
        self.attention_residual = method == "bmt" and attention_residual
        self.binarize_attention = activation_bits == 1 and binarize_attention
        self.alpha_lr_scale = alpha_lr_scale
        self.embedding_bits = embedding_bits
        self.output_input_bits = output_input_bits

    @classmethod
    def from_cfg(cls, cfg):
        return cls(cfg.binary_method, getattr(cfg, "weight_quant", "binary"), cfg.activation_bits,
                   not getattr(cfg, "no_extra_layernorm", False), not getattr(cfg, "no_attention_residual", False),
                   not getattr(cfg, "no_binarize_attention", False), getattr(cfg, "alpha_lr_scale", 1.0),
                   getattr(cfg, "embedding_bits", 32), getattr(cfg, "output_input_bits", 32))

    def has(self, point) -> bool:
        return False

    def weight(self, name="weight", matrix=True):
        """8-bit per-row quantizers of the embedding table and output projection with ``--embedding-bits 8``."""
        if self.embedding_bits == 8 and name in ("embedding", "output"):
            return WeightQuantizer(8, bucketed=True, name=name)
        return None

    def output_input_quantizer(self):
        """The per-token 8-bit quantizer of the output projection's input with ``--output-input-bits 8``, else None."""
        return TokenQuantizer("absmax8") if self.output_input_bits == 8 else None

    def activation(self, point, channels, bucket_dim=-1, **kwargs):
        """Quantizers of the attention operands: Q, K, V ('qkv') and the probabilities ('softmax_out')."""
        if not self.binarize_attention or point not in ("qkv", "softmax_out"):
            return None
        unsigned = point == "softmax_out"
        if self.method == "bit":  # two-set binarization: {-a, a} for Q, K, V; {0, a} for probabilities
            return ElasticBinaryQuantizer(0 if unsigned else channels, unsigned=unsigned, lr_scale=self.alpha_lr_scale)
        return TokenQuantizer("binary_unsigned" if unsigned else "binary")

    def _input_quantizer(self, features, relu_input):
        if self.activation_bits == 32:
            return None
        if self.activation_bits == 8:
            return TokenQuantizer("absmax8")
        if self.method == "bit":
            return ElasticBinaryQuantizer(features, unsigned=relu_input, lr_scale=self.alpha_lr_scale)
        return TokenQuantizer("binary_unsigned" if relu_input else "binary")

    def linear(self, in_features, out_features, name, bias=True, output_point=None, relu_input=False):
        """A binarized projection (``relu_input``: its input is a ReLU output, so binarize it to {0, a})."""
        return BinaryLinear(in_features, out_features, bias=bias,
                            weight_quantizer=BinaryWeightQuantizer(self.weight_mode),
                            input_quantizer=self._input_quantizer(in_features, relu_input),
                            input_norm=self.method == "bitnet", output_norm=self.extra_layernorm, split=self.split)


def spec_from_cfg(cfg):
    """The spec of a model config: binarized when the model set ``binary_method``, else 8-bit FQT."""
    if getattr(cfg, "binary_method", None):
        return BinarySpec.from_cfg(cfg)
    return QuantSpec.from_cfg(cfg)
