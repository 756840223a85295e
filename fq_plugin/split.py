"""``fq-split``: ternary weight splitting (BinaryBERT). Turns a checkpoint of a binarized model trained with
``--weight-quant ternary`` into one with ``--weight-quant split_binary``: every ternary matrix becomes two
binary planes whose binarized sum equals the ternary matrix, so the split model translates exactly like
the ternary one and can be fine-tuned with ``fairseq-train --restore-file``.

    fq-split checkpoints/checkpoint_best.pt split.pt
    fairseq-train DATA --user-dir fq_plugin --arch <same arch> --weight-quant split_binary --restore-file split.pt ...
"""
import sys


from . import serialization
from .quant.binarize import binarize_weight_l1, split_ternary, ternary_parts

QUANTIZER_SUFFIX = ".weight_quantizer.enabled"


def split_state(state):
    """Split every ternary matrix of a loaded checkpoint in place; returns the number of matrices split.

    Raises:
        ValueError: the checkpoint is not a ternary binarized model (or is already split).
    """
    model_cfg = serialization.model_options(state)
    method = serialization.get_option(model_cfg, "binary_method")
    weight_quant = serialization.get_option(model_cfg, "weight_quant")
    if not method:
        raise ValueError("not a checkpoint of a binarized model (bmt/bitnet/bit_transformer); nothing to split")
    if weight_quant != "ternary":
        raise ValueError(f"fq-split needs a model trained with --weight-quant ternary; this one has "
                         f"--weight-quant {weight_quant}")
    weights = state["model"]
    prefixes = [key[: -len(QUANTIZER_SUFFIX)] for key in weights if key.endswith(QUANTIZER_SUFFIX)]
    for prefix in prefixes:
        w = weights[prefix + ".weight"]
        w1, w2 = split_ternary(w.float())
        expected = ternary_parts(w.double())[0]
        error = (binarize_weight_l1(w1) + binarize_weight_l1(w2) - expected).abs().max().item()
        if error > 1e-6 * max(expected.abs().max().item(), 1.0):
            raise ValueError(f"{prefix}: the split planes do not reproduce the ternary weights (error {error:.3g})")
        weights[prefix + ".weight"] = w1.to(w.dtype)
        weights[prefix + ".weight_split"] = w2.to(w.dtype)
    serialization.set_option(model_cfg, "weight_quant", "split_binary")
    # The optimizer state belongs to the half-size parameters: fine-tuning starts a fresh optimizer.
    state["last_optimizer_state"] = None
    return len(prefixes)


def main(argv=None):
    def split(state):
        return f"split {split_state(state)} ternary matrices into two binary planes each"

    return serialization.checkpoint_tool_main(
        "fq-split", __doc__.split("\n\n")[0], "checkpoint of a model trained with --weight-quant ternary",
        "where to write the split (split_binary) checkpoint", split, argv)


if __name__ == "__main__":
    sys.exit(main())
