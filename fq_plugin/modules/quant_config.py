"""Which points of the Transformer are quantized, and which of them are bucketed (seed 003 §3.2-3.3)."""
from dataclasses import dataclass, field

from fairseq.dataclass import FairseqDataclass

from ..quant import ActivationQuantizer, WeightQuantizer, check_bits

# Every quantization point of seed 003 §3.2, named as in its Table 3.
QUANT_POINTS = (
    "weight",        # every weight matrix, embeddings, positional embeddings and LayerNorm gamma
    "enc_emb",       # encoder input embedding + positional encoding
    "dec_emb",       # decoder input embedding + positional encoding
    "qkv",           # Q, K, V (the inputs of the attention matmuls)
    "softmax_num",   # softmax numerator exp(s - max s)
    "softmax_den",   # softmax denominator
    "softmax_out",   # softmax output (attention probabilities)
    "attn_out",      # scaled dot-product attention output
    "attn_ln_out",   # LayerNorm output after an attention block
    "relu_out",      # ReLU output of the feed-forward network
    "ffn_out",       # feed-forward network output
    "ffn_ln_out",    # LayerNorm output after the feed-forward block
    "ln_num",        # LayerNorm numerator x - mean
    "ln_den",        # LayerNorm denominator sqrt(var + eps)
    "ln_quot",       # LayerNorm quotient
)
# Seed 003 §3.3: weights per output row, and these activations per feature.
PAPER_BUCKETED = ("weight", "enc_emb", "dec_emb", "qkv", "attn_out", "ffn_out", "ln_num", "ln_quot",
                  "attn_ln_out", "ffn_ln_out")


def parse_points(text: str, default=QUANT_POINTS, what="--quant-points"):
    """Parse a comma list of point names, or 'all' / 'none' / 'paper'."""
    text = (text or "").strip()
    if text == "all":
        return frozenset(QUANT_POINTS)
    if text == "none" or not text:
        return frozenset()
    if text == "paper":
        return frozenset(default)
    names = {t.strip() for t in text.split(",") if t.strip()}
    unknown = sorted(names - set(QUANT_POINTS))
    if unknown:
        raise ValueError(f"{what}: unknown quantization point(s) {unknown}; choose from {list(QUANT_POINTS)}, "
                         "'all', 'none' or 'paper'")
    return frozenset(names)


@dataclass
class QuantConfig(FairseqDataclass):
    """Command-line options of the fully quantized Transformer."""

    quant_bits: int = field(default=8, metadata={"help": "bit width k of every quantized point (2-8)"})
    quant_points: str = field(
        default="all",
        metadata={"help": "comma list of quantized points, or all/none; points: " + ",".join(QUANT_POINTS)})
    quant_bucketing: str = field(
        default="paper",
        metadata={"help": "comma list of bucketed points, or paper/all/none (paper: weights per row and "
                          + ",".join(PAPER_BUCKETED[1:]) + " per feature; softmax points bucket per head)"})


class QuantSpec:
    """Builds the quantizer of each point from the parsed options (None where a point is off)."""

    attention_residual = False  # BMT's residual around the attention output projection (BinarySpec)

    def __init__(self, bits: int = 8, points=frozenset(QUANT_POINTS), bucketed=frozenset(PAPER_BUCKETED)):
        self.bits = check_bits(bits)
        self.points = frozenset(points)
        self.bucketed = frozenset(bucketed)

    @classmethod
    def from_cfg(cls, cfg):
        """Read ``quant_*`` options from a fairseq config/namespace (defaults where absent)."""
        bits = getattr(cfg, "quant_bits", 8)
        points = parse_points(getattr(cfg, "quant_points", "all"))
        bucketed = parse_points(getattr(cfg, "quant_bucketing", "paper"), PAPER_BUCKETED, "--quant-bucketing")
        return cls(bits, points, bucketed)

    def has(self, point) -> bool:
        return point in self.points

    def weight(self, name="weight", matrix=True):
        if "weight" not in self.points:
            return None
        return WeightQuantizer(self.bits, bucketed=matrix and "weight" in self.bucketed, name=name)

    def activation(self, point, channels, bucket_dim=-1, **kwargs):
        assert point in QUANT_POINTS, point
        if point not in self.points:
            return None
        buckets = channels if point in self.bucketed else 1
        return ActivationQuantizer(buckets, self.bits, bucket_dim=bucket_dim, name=point, **kwargs)

    def output_input_quantizer(self):
        """None: the output projection reads the final LayerNorm's quantized output (``BinarySpec`` has one)."""
        return None

    def linear(self, in_features, out_features, name, bias=True, output_point=None, relu_input=False):
        """A ``QuantLinear`` with the weight quantizer ``name`` and, if given, its output quantized at
        ``output_point``. (``relu_input`` matters only to binarized models.)"""
        from .quant_linear import QuantLinear  # quant_linear imports this module

        output_quantizer = self.activation(output_point, out_features) if output_point else None
        return QuantLinear(in_features, out_features, bias=bias, weight_quantizer=self.weight(name),
                           output_quantizer=output_quantizer)


def apply_quantizer(quantizer, x, valid=None):
    """``quantizer(x, valid)``, or ``x`` unchanged where the point has no quantizer."""
    if quantizer is None:
        return x
    if isinstance(quantizer, WeightQuantizer):
        return quantizer(x)
    return quantizer(x, valid)


def fused_grids(*quantizers):
    """``(grids, bits)`` for a fused inference op of :mod:`fq_plugin.ops`: per quantizer its frozen ``[2, n]`` grid,
    or None where the point passes values through (no quantizer, or one switched off); None when a quantizer cannot
    be fused (not an affine one, a bucket without calibrated range, bit widths that differ)."""
    grids, bits = [], set()
    for q in quantizers:
        if q is None or not q._enabled:
            grids.append(None)
            continue
        grid = q.inference_grid() if type(q) is ActivationQuantizer else None
        if grid is None:
            return None
        grids.append(grid)
        bits.add(q.bits)
    if len(bits) > 1:
        return None
    return grids, (bits.pop() if bits else 8)


def run_fused(op, point, *args):
    """``op(*args)``, with the op's NaN error raised as ``FloatingPointError`` like the quantizers raise it."""
    try:
        return op(*args)
    except ValueError as e:
        if "NaN" not in str(e):
            raise
        raise FloatingPointError(f"NaN reached the quantized {point}") from e
