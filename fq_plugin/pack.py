"""``fq-pack``: turn a QAT checkpoint of an fq_plugin model into a packed checkpoint that ``fairseq-generate``
and ``fairseq-interactive`` load like any other (``--user-dir fq_plugin --path packed.pt``).

    fq-pack checkpoints/checkpoint_best.pt packed.pt

8-bit (k-bit) weights become one byte code per weight with a scale and minimum per row, binarized weights
8 bits per byte (int32 words of sign bits) with a scale per row, ternary weights two bit planes; biases,
LayerNorms, quantizer ranges and whatever the method keeps in float stay float. The optimizer state is
dropped. The packed model computes what the fake-quantized model computed, from the same integer codes.
"""
import argparse
import sys

from fairseq.models import ARCH_MODEL_REGISTRY

from . import serialization
from .models.ffn_pruning import SIDES, format_ffn_dims
from .models.fq_transformer import FQTransformerModel
from .modules.binary_config import BinarySpec, spec_from_cfg
from .modules.packed_linear import binary_planes, pack_binary_weight, pack_int8_weight
from .quant.binary_quantizers import BinaryWeightQuantizer

QUANTIZER_SUFFIX = ".weight_quantizer.enabled"
EMBEDDING_LAYERS = ("embed_tokens", "output_projection")  # 8-bit tables in every model that quantizes them


def _options(model_cfg):
    return argparse.Namespace(**model_cfg) if isinstance(model_cfg, dict) else model_cfg


def check_packable(state):
    """The model options of ``state`` if fq-pack can pack it; raises ``ValueError`` saying why not."""
    model_cfg = serialization.model_options(state)
    if model_cfg is None or "model" not in state:
        raise ValueError("not a fairseq checkpoint (no model options or weights)")
    arch = serialization.get_option(model_cfg, "arch") or serialization.get_option(model_cfg, "_name")
    model_class = ARCH_MODEL_REGISTRY.get(arch)
    if model_class is None or not issubclass(model_class, FQTransformerModel):
        raise ValueError(f"architecture {arch!r} is not an fq_plugin model; fq-pack packs fq_transformer, "
                         "bmt_transformer, bitnet_transformer and bit_transformer checkpoints")
    if serialization.get_option(model_cfg, "packed"):
        raise ValueError("this checkpoint is packed already")
    switches = [bool(v) for k, v in state["model"].items() if k.endswith(QUANTIZER_SUFFIX)]
    if not any(switches):
        raise ValueError("no weight of this checkpoint is quantized (a float model, or saved before the "
                         "quantization start update): there is nothing to pack; train it with QAT first")
    if not all(switches):
        raise ValueError("only some weights of this checkpoint are quantized; cannot pack it consistently")
    return model_cfg


def _record_ffn_sizes(weights, model_cfg):
    """Write the FFN size of every layer into the options (a fine-tuned pruned model has them only in shapes)."""
    for side in SIDES:
        sizes, i = [], 0
        while f"{side}.layers.{i}.fc1.weight" in weights:
            sizes.append(weights[f"{side}.layers.{i}.fc1.weight"].shape[0])
            i += 1
        if sizes and set(sizes) != {serialization.get_option(model_cfg, f"{side}_ffn_embed_dim")}:
            serialization.set_option(model_cfg, f"{side}_ffn_dims", format_ffn_dims(sizes))


def pack_state(state):
    """Pack a loaded checkpoint in place; returns ``(int8 tables/matrices, binarized matrices)`` counts.

    Raises:
        ValueError: the checkpoint cannot be packed (see ``check_packable``).
    """
    model_cfg = check_packable(state)
    spec = spec_from_cfg(_options(model_cfg))
    weights = state["model"]
    _record_ffn_sizes(weights, model_cfg)
    packed_by_source, counts = {}, [0, 0]
    for prefix in [k[: -len(QUANTIZER_SUFFIX)] for k in list(weights) if k.endswith(QUANTIZER_SUFFIX)]:
        weight = weights.pop(prefix + ".weight")
        del weights[prefix + QUANTIZER_SUFFIX]
        source = (weight.untyped_storage().data_ptr(), weight.storage_offset(), tuple(weight.shape))
        binary = isinstance(spec, BinarySpec) and prefix.split(".")[-1] not in EMBEDDING_LAYERS
        if source not in packed_by_source:  # tied tables (embeddings, output projection) are packed once
            if binary:
                quantizer = BinaryWeightQuantizer(spec.weight_mode)
                quantizer.set_enabled(True)
                split = weights.pop(prefix + ".weight_split", None)
                packed_by_source[source] = pack_binary_weight(binary_planes(quantizer, weight, split))
            else:
                quantizer = spec.weight({"embed_tokens": "embedding", "output_projection": "output"}.get(
                    prefix.split(".")[-1], "weight"))
                quantizer.set_enabled(True)
                packed_by_source[source] = pack_int8_weight(weight, quantizer)
            counts[binary] += 1
        for name, tensor in packed_by_source[source].items():
            weights[f"{prefix}.{name}"] = tensor
    serialization.set_option(model_cfg, "packed", True)
    state["last_optimizer_state"] = None  # belongs to the float parameters; a packed model is not trained
    return tuple(counts)


def main(argv=None):
    def pack(state):
        int8_count, binary_count = pack_state(state)
        return f"packed {int8_count} 8-bit and {binary_count} binarized weight matrices"

    return serialization.checkpoint_tool_main(
        "fq-pack", __doc__.split("\n\n")[0], "checkpoint of an fq_plugin model trained with quantization switched on",
        "where to write the packed checkpoint", pack, argv)


if __name__ == "__main__":
    sys.exit(main())
