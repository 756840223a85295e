"""The structure ``fairseq-generate`` builds for a checkpoint written by ``fq-pack`` (``--packed``): every
quantized layer replaced by its packed counterpart, and each int8 layer linked to the quantizer whose
output it reads, so that it can recover the integer codes of its input."""
from dataclasses import dataclass, field

from fairseq.dataclass import FairseqDataclass

from ..modules.binary_linear import BinaryLinear
from ..modules.packed_linear import PackedBinaryLinear, PackedEmbedding, PackedInt8Linear
from ..modules.quant_activation import QuantActivation, QuantizeBeforeDropout
from ..modules.quant_linear import QuantEmbedding, QuantLinear
from ..quant import ActivationQuantizer

CODE_BUFFERS = ("weight_codes", "weight_scale", "weight_min")


@dataclass
class PackedConfig(FairseqDataclass):
    packed: bool = field(
        default=False,
        metadata={"help": "the checkpoint holds packed integer/bit weights (set by fq-pack, not a training option)"})


def planes_of(linear: BinaryLinear) -> int:
    """Bit planes a binarized projection packs into: 2 for split binary and ternary weights, else 1."""
    return 2 if linear.weight_split is not None or linear.weight_quantizer.mode == "ternary" else 1


def _packed_counterpart(module):
    if isinstance(module, QuantLinear) and module.weight_quantizer is not None:
        return PackedInt8Linear(module.in_features, module.out_features, module.bias is not None,
                                module.output_quantizer, module.token_quantizer)
    if isinstance(module, BinaryLinear):
        return PackedBinaryLinear(module.in_features, module.out_features, module.bias is not None,
                                  planes_of(module), module.input_quantizer, module.input_norm, module.output_norm)
    if isinstance(module, QuantEmbedding) and module.weight_quantizer is not None:
        return PackedEmbedding(module.num_embeddings, module.embedding_dim, module.padding_idx)
    return None


def to_packed_structure(model):
    """Replace the quantized layers of ``model`` in place by empty packed layers (``load_state_dict`` fills
    them). Shared modules stay shared, and layers that shared a weight (tied embeddings and output
    projection) share their codes. Activation quantizers switch to the fused inference op."""
    converted, by_weight = {}, {}
    for parent in list(model.modules()):
        for name, child in list(parent._modules.items()):
            if child is None:
                continue
            if id(child) not in converted:
                packed = _packed_counterpart(child)
                converted[id(child)] = packed if packed is not None else child
                if packed is not None and hasattr(packed, "weight_codes"):
                    first = by_weight.setdefault(id(child.weight), packed)
                    for buffer in CODE_BUFFERS:
                        packed._buffers[buffer] = getattr(first, buffer)
            parent._modules[name] = converted[id(child)]
        if isinstance(parent, ActivationQuantizer):
            parent.fused_inference = True
    link_gemm_inputs(model)
    return model


def _output_quantizer(module):
    return getattr(module, "output_quantizer", None)


def _link(linear, quantizer):
    if isinstance(linear, (PackedInt8Linear, QuantLinear)):
        object.__setattr__(linear, "input_quantizer", quantizer)  # a reference, not a submodule: not saved


def link_gemm_inputs(model):
    """Tell each 8-bit layer (``QuantLinear``, ``PackedInt8Linear``) which quantizer produced its input (None where
    no quantizer does). Returns ``model``.

    fairseq's layers feed each projection with the output of a quantized point: the embedding sum (layer 0),
    a LayerNorm (post-norm: the previous one; pre-norm: the layer's own), the attention output, the ReLU.
    """
    encoder_out = _link_stack(model.encoder, "enc", None)
    _link_stack(model.decoder, "dec", encoder_out)
    return model


def _embedding_quantizer(stack):
    dropout = getattr(stack, "dropout_module", None)
    return dropout.quantizer if isinstance(dropout, QuantizeBeforeDropout) else None


def _link_stack(stack, side, encoder_out):
    """Link the layers of an encoder or decoder; returns the quantizer of its output."""
    previous = _embedding_quantizer(stack)
    for layer in stack.layers:
        pre_norm = layer.normalize_before
        self_attn = layer.self_attn
        attn_input = _output_quantizer(layer.self_attn_layer_norm) if pre_norm else previous
        for proj in (self_attn.q_proj, self_attn.k_proj, self_attn.v_proj):
            _link(proj, attn_input)
        _link(self_attn.out_proj, self_attn.attn_out_quantizer)
        ffn_input = _output_quantizer(layer.self_attn_layer_norm)
        cross = getattr(layer, "encoder_attn", None)
        if cross is not None:
            cross_norm = _output_quantizer(layer.encoder_attn_layer_norm)
            _link(cross.q_proj, cross_norm if pre_norm else ffn_input)
            _link(cross.k_proj, encoder_out)
            _link(cross.v_proj, encoder_out)
            _link(cross.out_proj, cross.attn_out_quantizer)
            ffn_input = cross_norm
        if pre_norm:
            ffn_input = _output_quantizer(layer.final_layer_norm)
        _link(layer.fc1, ffn_input)
        activation = layer.activation_fn
        # fc2 reads the ReLU's quantized output unless fairseq's --scale-fc puts a LayerNorm between them
        relu_feeds_fc2 = isinstance(activation, QuantActivation) and getattr(layer, "ffn_layernorm", None) is None
        _link(layer.fc2, activation.quantizer if relu_feeds_fc2 else None)
        if relu_feeds_fc2:
            object.__setattr__(activation, "consumer", layer.fc2 if isinstance(layer.fc2, PackedInt8Linear) else None)
        previous = None if pre_norm else _output_quantizer(layer.final_layer_norm)  # pre-norm: a residual sum
    if getattr(stack, "layer_norm", None) is not None:
        previous = _output_quantizer(stack.layer_norm)
    if side == "dec":
        if getattr(stack, "project_out_dim", None) is not None:
            previous = None
        _link(stack.output_projection, previous)
    return previous
