"""Binarized Transformers: BMT (seed 000), BitNet (seed 001) and BiT (seed 002), with ternary weights and
ternary weight splitting (seed 004) selectable on each. They are ``fq_transformer`` with a ``BinarySpec``:
the same fairseq layers and hooks, other projections and attention-operand quantizers."""
from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import (
    base_architecture,
    tiny_architecture,
    transformer_vaswani_wmt_en_de_big,
    transformer_wmt_en_de,
)

from ..modules.binary_config import BinaryConfig, resolve_binary_args
from .fq_transformer import FQTransformerModel


class BinaryTransformerModel(FQTransformerModel):
    """Common part of the binarized models; ``method`` names the binarization scheme."""

    method = None
    config_class = BinaryConfig

    @classmethod
    def build_model(cls, args, task):
        resolve_binary_args(args, cls.method)
        return super().build_model(args, task)


@register_model("bmt_transformer")
class BMTTransformerModel(BinaryTransformerModel):
    """Binarized NMT: 1-bit weights (AQT binarizer, one bound per output channel) in every projection, an
    extra LayerNorm on each binarized projection's output, a residual around the attention output
    projection; ``--binarize-activations`` adds 1-bit inputs and attention operands."""

    method = "bmt"


@register_model("bitnet_transformer")
class BitNetTransformerModel(BinaryTransformerModel):
    """BitNet: BitLinear (LayerNorm, per-token absmax 8-bit input, Sign(W - mean W) * mean|W|) in every
    projection; embeddings and output projection in float."""

    method = "bitnet"


@register_model("bit_transformer")
class BiTTransformerModel(BinaryTransformerModel):
    """BiT: mean-centred binary weights, elastic binary activations with learned scale and shift;
    two-set binarization ({-a, a} for projection inputs and Q/K/V, {0, a} for probabilities and ReLU outputs)."""

    method = "bit"


def _register(model, suffix, base):
    name = model if not suffix else f"{model}_{suffix}"
    register_model_architecture(model, name)(lambda args: base(args))


for _model in ("bmt_transformer", "bitnet_transformer", "bit_transformer"):
    _register(_model, "", base_architecture)
    _register(_model, "tiny", tiny_architecture)
    _register(_model, "wmt_en_de", transformer_wmt_en_de)
_register("bmt_transformer", "wmt_en_de_big", transformer_vaswani_wmt_en_de_big)
