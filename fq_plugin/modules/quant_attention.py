"""fairseq's MultiheadAttention with Q/K/V, softmax numerator/denominator/output and attention output
fake-quantized (seed 003 §3.2). Projections are ``QuantLinear``; state-dict keys and the incremental
decoding cache are fairseq's own, so float checkpoints load and beam search works unchanged."""
from functools import partial
from typing import Dict, Optional

import torch
from fairseq.modules import MultiheadAttention
from torch import Tensor

from .. import ops  # noqa: F401  (defines the torch.ops.fq_plugin ops without the extension)
from ..quant import valid_positions
from ..quant.parts import softmax_from_parts
from .quant_config import apply_quantizer, fused_grids, run_fused


class QuantMultiheadAttention(MultiheadAttention):
    """Drop-in ``MultiheadAttention`` (same constructor plus ``spec``, same ``forward`` signature).

    ``spec`` (a ``QuantSpec`` or ``BinarySpec``) builds the projections and the quantizers of the attention
    operands; with ``spec.attention_residual`` (BMT) the output projection gets a residual shortcut.
    """

    def __init__(self, embed_dim, num_heads, spec, **kwargs):
        super().__init__(embed_dim, num_heads, **kwargs)
        if self.bias_k is not None or self.add_zero_attn:
            raise ValueError("QuantMultiheadAttention does not support add_bias_kv / add_zero_attn")
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            linear = getattr(self, name)
            setattr(self, name, spec.linear(linear.in_features, linear.out_features, name,
                                            bias=linear.bias is not None))
        self.out_proj_residual = spec.attention_residual
        self.reset_parameters()  # fairseq's initialisation, on the new projections
        self.q_quantizer = spec.activation("qkv", embed_dim)
        self.k_quantizer = spec.activation("qkv", embed_dim)
        self.v_quantizer = spec.activation("qkv", embed_dim)
        # Softmax points are B x H x T x S; their buckets are the heads.
        self.softmax_num_quantizer = spec.activation("softmax_num", num_heads, bucket_dim=1)
        self.softmax_den_quantizer = spec.activation("softmax_den", num_heads, bucket_dim=1)
        self.softmax_out_quantizer = spec.activation("softmax_out", num_heads, bucket_dim=1)
        self.attn_out_quantizer = spec.activation("attn_out", embed_dim)

    def set_beam_size(self, beam_size):
        """Keep one key/value copy per hypothesis: the cache layout stays that of plain attention."""

    def _softmax(self, scores, masked, query_valid):
        """Attention probabilities from the quantized numerator, denominator and output (seed 003 §3.2)."""
        parts = (self.softmax_num_quantizer, self.softmax_den_quantizer, self.softmax_out_quantizer)
        fused = None if self.training or torch.is_grad_enabled() else fused_grids(*parts)
        if fused is not None:  # inference: one pass (QAT and packed models alike)
            grids, bits = fused
            return run_fused(torch.ops.fq_plugin.quantized_softmax, "softmax", scores, masked, *grids, bits)
        attn_valid = ~masked
        if query_valid is not None:
            attn_valid = attn_valid & query_valid[..., 0].t().view(scores.shape[0], 1, scores.shape[2], 1)
        valid = (attn_valid, attn_valid.any(-1, keepdim=True), attn_valid)
        quantizers = [None if q is None else partial(apply_quantizer, q, valid=v) for q, v in zip(parts, valid)]
        return softmax_from_parts(scores, masked, *quantizers)

    def forward(self, query: Tensor, key: Optional[Tensor], value: Optional[Tensor],
                key_padding_mask: Optional[Tensor] = None,
                incremental_state: Optional[Dict[str, Dict[str, Optional[Tensor]]]] = None,
                need_weights: bool = True, static_kv: bool = False, attn_mask: Optional[Tensor] = None,
                before_softmax: bool = False, need_head_weights: bool = False):
        if before_softmax:
            raise NotImplementedError("before_softmax is not supported by quantized attention")
        need_weights = need_weights or need_head_weights
        tgt_len, bsz, embed_dim = query.size()
        heads, head_dim = self.num_heads, self.head_dim

        saved_state = self._get_input_buffer(incremental_state) if incremental_state is not None else None
        if saved_state is not None and static_kv and "prev_key" in saved_state:
            key = value = None  # encoder keys/values are cached from the first step
        if self.self_attention:
            key = value = query
        query_valid = valid_positions(query)
        key_valid = None if key_padding_mask is None else ~key_padding_mask.t().unsqueeze(-1).bool()
        if self.self_attention and key_valid is None:
            key_valid = query_valid

        q = apply_quantizer(self.q_quantizer, self.q_proj(query), query_valid) * self.scaling
        q = q.contiguous().view(tgt_len, bsz * heads, head_dim).transpose(0, 1)
        k = v = None
        if key is not None:
            k = apply_quantizer(self.k_quantizer, self.k_proj(key), key_valid)
            v = apply_quantizer(self.v_quantizer, self.v_proj(value), key_valid)
            k = k.contiguous().view(-1, bsz * heads, head_dim).transpose(0, 1)
            v = v.contiguous().view(-1, bsz * heads, head_dim).transpose(0, 1)

        if saved_state is not None:
            if "prev_key" in saved_state:
                prev_key = saved_state["prev_key"].view(bsz * heads, -1, head_dim)
                prev_value = saved_state["prev_value"].view(bsz * heads, -1, head_dim)
                k = prev_key if static_kv else torch.cat([prev_key, k], dim=1)
                v = prev_value if static_kv else torch.cat([prev_value, v], dim=1)
            key_padding_mask = MultiheadAttention._append_prev_key_padding_mask(
                key_padding_mask=key_padding_mask,
                prev_key_padding_mask=saved_state.get("prev_key_padding_mask"),
                batch_size=bsz, src_len=k.size(1), static_kv=static_kv)
            saved_state["prev_key"] = k.view(bsz, heads, -1, head_dim)
            saved_state["prev_value"] = v.view(bsz, heads, -1, head_dim)
            saved_state["prev_key_padding_mask"] = key_padding_mask
            self._set_input_buffer(incremental_state, saved_state)
        src_len = k.size(1)

        scores = torch.bmm(q, k.transpose(1, 2)).view(bsz, heads, tgt_len, src_len).float()
        masked = torch.zeros(1, 1, 1, 1, dtype=torch.bool, device=scores.device)
        if attn_mask is not None:
            # fairseq masks with -inf (decoder) or -1e8 (encoder layers), or with a bool mask.
            blocked = attn_mask <= -1e4 if attn_mask.is_floating_point() else attn_mask.bool()
            masked = masked | blocked.view(1, 1, tgt_len, src_len)
        if key_padding_mask is not None:
            masked = masked | key_padding_mask.bool().view(bsz, 1, 1, src_len)
        probs = self._softmax(scores, masked, query_valid).type_as(q)

        attn = torch.bmm(self.dropout_module(probs.view(bsz * heads, tgt_len, src_len)), v)
        attn = attn.transpose(0, 1).contiguous().view(tgt_len, bsz, embed_dim)
        attn = apply_quantizer(self.attn_out_quantizer, attn, query_valid)
        attn = self.out_proj(attn) + attn if self.out_proj_residual else self.out_proj(attn)

        weights = None
        if need_weights:
            weights = probs.float().transpose(1, 0)  # heads x B x T x S, as fairseq returns them
            if not need_head_weights:
                weights = weights.mean(dim=0)
        return attn, weights
