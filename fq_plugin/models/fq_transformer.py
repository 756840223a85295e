"""The fully quantized Transformer (seed 003): fairseq's Transformer with quantized modules plugged in
through its build_* hooks."""
import logging

import torch
from fairseq.dataclass.utils import gen_parser_from_dataclass
from fairseq.distributed import fsdp_wrap
from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import (
    TransformerConfig,
    TransformerDecoderBase,
    TransformerEncoderBase,
    TransformerModel,
    base_architecture,
    tiny_architecture,
    transformer_iwslt_de_en,
    transformer_vaswani_wmt_en_de_big,
    transformer_wmt_en_de,
)
from fairseq.modules.transformer_layer import TransformerDecoderLayerBase, TransformerEncoderLayerBase
from fairseq.modules.checkpoint_activations import checkpoint_wrapper

from .ffn_pruning import FFNDimsConfig, apply_ffn_dims
from .packed_model import PackedConfig, link_gemm_inputs, to_packed_structure
from ..modules.quant_activation import QuantActivation, QuantizeBeforeDropout
from ..modules.quant_attention import QuantMultiheadAttention
from ..modules.binary_config import spec_from_cfg
from ..modules.quant_config import QuantConfig
from ..modules.quant_layer_norm import QuantLayerNorm
from ..modules.quant_linear import QuantEmbedding, QuantLinear
from ..ops.heap import keep_freed_memory
from ..quant import Quantizer, token_mask
from ..quant.inference_cache import InferenceCache, trusted_inference_caches

logger = logging.getLogger(__name__)


def _wrap_layer(layer, cfg):
    """fairseq's activation checkpointing / FSDP wrapping of a layer, as its own build_*_layer does."""
    if cfg.checkpoint_activations:
        layer = checkpoint_wrapper(layer, offload_to_cpu=cfg.offload_activations)
    return fsdp_wrap(layer, min_num_params=cfg.min_params_to_wrap if not cfg.checkpoint_activations else 0)


def _quantize_ffn_and_norms(layer, spec, ffn_dim, norms):
    """Swap the ReLU and the LayerNorms of a built fairseq layer for their quantized versions."""
    if spec.has("relu_out"):
        layer.activation_fn = QuantActivation(layer.activation_fn,
                                              spec.activation("relu_out", ffn_dim, unsigned=True))
    if not spec.points:  # binarized models keep fairseq's LayerNorms
        return
    for name, point in norms.items():
        if getattr(layer, name, None) is not None:
            setattr(layer, name, QuantLayerNorm(layer.embed_dim, spec, point))


class FQTransformerEncoderLayer(TransformerEncoderLayerBase):
    def __init__(self, cfg, return_fc=False):
        # fairseq's __init__ calls our build_* hooks, which need the spec: set it first.
        object.__setattr__(self, "quant_spec", spec_from_cfg(cfg))
        super().__init__(cfg, return_fc)
        _quantize_ffn_and_norms(self, self.quant_spec, cfg.encoder.ffn_embed_dim,
                                {"self_attn_layer_norm": "attn_ln_out", "final_layer_norm": "ffn_ln_out"})

    def build_fc1(self, input_dim, output_dim, q_noise, qn_block_size):
        return self.quant_spec.linear(input_dim, output_dim, "fc1")

    def build_fc2(self, input_dim, output_dim, q_noise, qn_block_size):
        return self.quant_spec.linear(input_dim, output_dim, "fc2", output_point="ffn_out", relu_input=True)

    def build_self_attention(self, embed_dim, cfg):
        return QuantMultiheadAttention(embed_dim, cfg.encoder.attention_heads, self.quant_spec,
                                       dropout=cfg.attention_dropout, self_attention=True)


class FQTransformerDecoderLayer(TransformerDecoderLayerBase):
    def __init__(self, cfg, no_encoder_attn=False, add_bias_kv=False, add_zero_attn=False):
        object.__setattr__(self, "quant_spec", spec_from_cfg(cfg))
        super().__init__(cfg, no_encoder_attn, add_bias_kv, add_zero_attn)
        _quantize_ffn_and_norms(self, self.quant_spec, cfg.decoder.ffn_embed_dim,
                                {"self_attn_layer_norm": "attn_ln_out", "encoder_attn_layer_norm": "attn_ln_out",
                                 "final_layer_norm": "ffn_ln_out"})

    build_fc1 = FQTransformerEncoderLayer.build_fc1
    build_fc2 = FQTransformerEncoderLayer.build_fc2

    def build_self_attention(self, embed_dim, cfg, add_bias_kv=False, add_zero_attn=False):
        return QuantMultiheadAttention(embed_dim, cfg.decoder.attention_heads, self.quant_spec,
                                       dropout=cfg.attention_dropout, self_attention=not cfg.cross_self_attention,
                                       add_bias_kv=add_bias_kv, add_zero_attn=add_zero_attn)

    def build_encoder_attention(self, embed_dim, cfg):
        return QuantMultiheadAttention(embed_dim, cfg.decoder.attention_heads, self.quant_spec,
                                       kdim=cfg.encoder.embed_dim, vdim=cfg.encoder.embed_dim,
                                       dropout=cfg.attention_dropout, encoder_decoder_attention=True)


def _quantize_inputs(module, spec, point, embed_dim):
    """Quantize the embedding + positions sum (before dropout) and the positional embeddings."""
    if spec.has(point):
        module.dropout_module = QuantizeBeforeDropout(spec.activation(point, embed_dim), module.dropout_module)
    module.positions_quantizer = spec.weight("positions") if module.embed_positions is not None else None
    if module.positions_quantizer is not None:
        module.embed_positions.register_forward_hook(module.positions_quantizer.quantize_output_rows)
    if module.layer_norm is not None and spec.points:  # pre-norm models end with a LayerNorm
        module.layer_norm = QuantLayerNorm(embed_dim, spec, "ffn_ln_out")


class FQTransformerEncoder(TransformerEncoderBase):
    def __init__(self, cfg, dictionary, embed_tokens, return_fc=False):
        super().__init__(cfg, dictionary, embed_tokens, return_fc)
        _quantize_inputs(self, spec_from_cfg(cfg), "enc_emb", cfg.encoder.embed_dim)

    def build_encoder_layer(self, cfg):
        return _wrap_layer(FQTransformerEncoderLayer(cfg, return_fc=self.return_fc), cfg)

    def forward(self, src_tokens, src_lengths=None, return_all_hiddens: bool = False, token_embeddings=None):
        with token_mask(src_tokens.ne(self.padding_idx)):
            return super().forward(src_tokens, src_lengths, return_all_hiddens, token_embeddings)


# Set in the decoder's output of an inference decoding step: its logits are read once, by the search.
DECODING_STEP = "fq_decoding_step"
# Key the decoder adds to a search's incremental state after its first step.
SEARCH_STARTED = "fq_search_started"


class FQTransformerDecoder(InferenceCache, TransformerDecoderBase):
    def __init__(self, cfg, dictionary, embed_tokens, no_encoder_attn=False, output_projection=None):
        super().__init__(cfg, dictionary, embed_tokens, no_encoder_attn, output_projection)
        _quantize_inputs(self, spec_from_cfg(cfg), "dec_emb", cfg.decoder.embed_dim)

    def build_decoder_layer(self, cfg, no_encoder_attn=False):
        return _wrap_layer(FQTransformerDecoderLayer(cfg, no_encoder_attn), cfg)

    def build_output_projection(self, cfg, dictionary, embed_tokens):
        super().build_output_projection(cfg, dictionary, embed_tokens)
        float_projection = self.output_projection
        if float_projection is None:  # adaptive softmax
            return
        spec = spec_from_cfg(cfg)
        self.output_projection = QuantLinear(float_projection.in_features, float_projection.out_features,
                                             bias=False, weight_quantizer=spec.weight("output"),
                                             token_quantizer=spec.output_input_quantizer())
        self.output_projection.weight = float_projection.weight  # keeps weight sharing with the embeddings

    def reorder_incremental_state_scripting(self, incremental_state, new_order):
        """fairseq's (beam search calls it every step), over the modules that have ``reorder_incremental_state`` listed
        once: fairseq looks for them among all the decoder's modules each time (~700 here, quantizers included; see
        BENCHMARKS.md, "Decoding step, session 11")."""
        reordering = self.inference_cached("reordering_modules", (), lambda: [
            m for m in self.modules() if hasattr(m, "reorder_incremental_state")])
        for module in reordering:
            result = module.reorder_incremental_state(incremental_state, new_order)
            if result is not None:
                incremental_state = result

    def forward(self, prev_output_tokens, encoder_out=None, incremental_state=None, **kwargs):
        stepping = incremental_state is not None and not torch.is_grad_enabled() and not self.training
        # A search's first step checks every cached weight and grid; its later steps reuse them unchecked.
        with token_mask(prev_output_tokens.ne(self.padding_idx)), trusted_inference_caches(
                stepping and SEARCH_STARTED in incremental_state):
            x, extra = super().forward(prev_output_tokens, encoder_out, incremental_state, **kwargs)
        if stepping:
            incremental_state[SEARCH_STARTED] = {}
            if isinstance(extra, dict):
                extra[DECODING_STEP] = True  # see FQTransformerModel.get_normalized_probs
        return x, extra


@register_model("fq_transformer")
class FQTransformerModel(TransformerModel):
    """Fully Quantized Transformer (seed 003): every matmul input and weight, the softmax and LayerNorm
    parts fake-quantized to k bits during training. Quantization is off until the criterion
    (``qat_label_smoothed_cross_entropy``) switches it on; the switch and the ranges are saved."""

    config_class = QuantConfig  # the quantization options; binarized models use BinaryConfig

    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        gen_parser_from_dataclass(parser, cls.config_class())
        gen_parser_from_dataclass(parser, FFNDimsConfig())  # per-layer FFN sizes of pruned models
        gen_parser_from_dataclass(parser, PackedConfig())  # set in checkpoints written by fq-pack

    @classmethod
    def build_model(cls, args, task):
        spec_from_cfg(args)  # fail fast on bad --quant-* values
        # pruned models: FFN sizes from --encoder-ffn-dims/--decoder-ffn-dims or from the loaded checkpoint
        model = apply_ffn_dims(super().build_model(args, task), args)
        if not getattr(args, "packed", False):
            return link_gemm_inputs(model)
        keep_freed_memory()  # packed checkpoints are for decoding: beam search reuses its large buffers
        return to_packed_structure(model)

    @classmethod
    def build_embedding(cls, args, dictionary, embed_dim, path=None):
        float_embedding = super().build_embedding(args, dictionary, embed_dim, path)
        embedding = QuantEmbedding(len(dictionary), embed_dim, dictionary.pad(),
                                   weight_quantizer=spec_from_cfg(args).weight("embedding"))
        embedding.weight = float_embedding.weight
        return embedding

    @classmethod
    def build_encoder(cls, args, src_dict, embed_tokens):
        return FQTransformerEncoder(TransformerConfig.from_namespace(args), src_dict, embed_tokens)

    @classmethod
    def build_decoder(cls, args, tgt_dict, embed_tokens):
        cfg = TransformerConfig.from_namespace(args)
        return FQTransformerDecoder(cfg, tgt_dict, embed_tokens, no_encoder_attn=cfg.no_cross_attention)

    def set_beam_size(self, beam_size):
        """Called by fairseq's SequenceGenerator (beam > 1): the hypotheses of a sentence then share one copy of its
        encoder keys and values in the decoder's attention (fairseq does this for BART, not for its Transformer)."""
        self.decoder.set_beam_size(beam_size)

    def get_normalized_probs(self, net_output, log_probs, sample=None):
        """fairseq's, except for the logits of a decoding step at inference (beam search reads them once): the
        log-probabilities are written over them (the same ATen op and values) instead of into a new batch x vocabulary
        tensor per step."""
        logits, extra = net_output[0], net_output[1] if len(net_output) > 1 else None
        if (log_probs and isinstance(extra, dict) and extra.get(DECODING_STEP) and not torch.is_grad_enabled()
                and logits.dtype == torch.float32 and logits.is_contiguous()
                and getattr(self.decoder, "adaptive_softmax", None) is None):
            return torch.log_softmax(logits, dim=-1, out=logits)
        return super().get_normalized_probs(net_output, log_probs, sample)

    num_updates = 0

    def set_num_updates(self, num_updates):
        """fairseq calls this before every training step and after loading a checkpoint."""
        super().set_num_updates(num_updates)
        self.num_updates = num_updates

    def quantizers(self):
        return [m for m in self.modules() if isinstance(m, Quantizer)]

    def set_quantization(self, enabled: bool, observe: bool = True, activations=None):
        """Switch fake quantization on/off and choose whether training passes update ranges.

        Args:
            enabled: weights quantized (and activations too unless ``activations`` says otherwise).
            observe: training passes update the activation ranges.
            activations: switch for the activation quantizers alone (None: same as ``enabled``).
        """
        activations = enabled if activations is None else activations
        for quantizer in self.quantizers():
            quantizer.set_enabled(enabled if quantizer.kind == "weight" else activations)
            quantizer.observing = observe

    @property
    def quantization_enabled(self) -> bool:
        return any(q._enabled for q in self.quantizers())

    def upgrade_state_dict_named(self, state_dict, name):
        """Let float checkpoints (e.g. a stock ``transformer``) load: quantizer state they lack starts fresh, and so
        do the LayerNorms of binarized projections (BMT's output norms, BitNet's input norms) when the checkpoint is
        a float model: a float model initializes a binarized one. A quantized checkpoint must match them."""
        super().upgrade_state_dict_named(state_dict, name)
        prefix = name + "." if name else ""
        from_float = not any("quantizer." in key for key in state_dict if key.startswith(prefix))
        fresh_norms = []
        for key, value in self.state_dict().items():
            if prefix + key in state_dict:
                continue
            if "quantizer." in key:
                state_dict[prefix + key] = value
            elif from_float and (".output_norm." in key or ".input_norm." in key):
                state_dict[prefix + key] = value
                fresh_norms.append(key)
        if fresh_norms:
            logger.info(f"float checkpoint: {len(fresh_norms)} LayerNorm parameters of binarized projections "
                        "start fresh")


@register_model_architecture("fq_transformer", "fq_transformer")
def fq_transformer(args):
    base_architecture(args)


@register_model_architecture("fq_transformer", "fq_transformer_tiny")
def fq_transformer_tiny(args):
    tiny_architecture(args)


@register_model_architecture("fq_transformer", "fq_transformer_iwslt_de_en")
def fq_transformer_iwslt_de_en(args):
    transformer_iwslt_de_en(args)


@register_model_architecture("fq_transformer", "fq_transformer_wmt_en_de")
def fq_transformer_wmt_en_de(args):
    transformer_wmt_en_de(args)


@register_model_architecture("fq_transformer", "fq_transformer_wmt_en_de_big")
def fq_transformer_wmt_en_de_big(args):
    transformer_vaswani_wmt_en_de_big(args)
