"""fairseq's MultiheadAttention with Q/K/V, softmax numerator/denominator/output and attention output
fake-quantized (seed 003 §3.2). Projections are ``QuantLinear``; state-dict keys and the incremental
decoding cache are fairseq's own, so float checkpoints load and beam search works unchanged."""
from functools import partial
from typing import Dict, Optional

import torch
from fairseq.modules import MultiheadAttention
from torch import Tensor

from .. import ops  # noqa: F401  (defines the torch.ops.fq_plugin ops without the extension)
from ..ops.reference import gather_key_rows
from ..quant import ActivationQuantizer, valid_positions
from ..quant.inference_cache import InferenceCache
from ..quant.parts import softmax_from_parts
from .quant_config import apply_quantizer, fused_grids, run_fused


class QuantMultiheadAttention(InferenceCache, MultiheadAttention):
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

    def _share_beams(self, key, key_padding_mask):
        """``(key, key_padding_mask, group)``: one row per sentence (``group`` = beam size) when fairseq's generator
        repeated every sentence once per hypothesis (``set_beam_size``, the rows equal in groups of the beam size), so
        that a sentence's hypotheses share one copy of its encoder keys and values; else unchanged and 1."""
        beam, src_len, rows, dim = self.beam_size, *key.shape
        if beam <= 1 or rows % beam:
            return key, key_padding_mask, 1
        grouped = key.reshape(src_len, rows // beam, beam, dim)
        masks = None if key_padding_mask is None else key_padding_mask.reshape(rows // beam, beam, src_len)
        if not torch.equal(grouped, grouped[:, :, :1].expand_as(grouped)) or (
                masks is not None and not torch.equal(masks, masks[:, :1].expand_as(masks))):
            return key, key_padding_mask, 1
        return grouped[:, :, 0], None if masks is None else masks[:, 0], beam

    def reorder_incremental_state(self, incremental_state, new_order):
        """fairseq's beam reordering, also for encoder keys kept once per sentence. Beam search reorders hypotheses
        within their sentence, which changes nothing in encoder keys; when sentences finish, the rows of those left
        are kept: one per sentence while each keeps a whole group of hypotheses, else one per hypothesis again."""
        buffer = self._get_input_buffer(incremental_state)
        if not buffer:
            return incremental_state
        if not self.encoder_decoder_attention:
            kept = ("prev_key", "prev_value")  # where they stay (``_store_step``), or reordered by the next append
            if "key_rows" not in buffer:
                pending = buffer.get("pending_order")
                buffer["pending_order"] = new_order if pending is None else pending.index_select(0, new_order)
                kept += ("pending_order",)
            buffer.update({k: t.index_select(0, new_order) for k, t in buffer.items()
                           if t is not None and k not in kept})
            return self._set_input_buffer(incremental_state, buffer)
        group = int(buffer.get("beam_group", torch.ones(1)))
        cached = {k: t for k, t in buffer.items() if t is not None and k not in ("beam_group", "step_mask")}
        rows = next(iter(cached.values())).size(0)
        if rows * group != new_order.numel():  # sentences finished
            source_row = new_order // group
            runs = source_row.view(-1, group) if new_order.numel() % group == 0 else None
            if group > 1 and runs is not None and torch.equal(runs, runs[:, :1].expand_as(runs)):
                order = runs[:, 0]
            else:
                order, group = source_row, 1
            buffer.update({k: t.index_select(0, order) for k, t in cached.items()})
            buffer["beam_group"] = torch.tensor([group])
            buffer.pop("step_mask", None)  # one row per hypothesis: rebuilt at the next step
        return self._set_input_buffer(incremental_state, buffer)

    @staticmethod
    def _store_step(saved_state, k, v, rows, heads):
        """Append one step's keys and values ``[rows * heads, T, D]`` to a decoding cache that beam search never copies:
        ``prev_key``/``prev_value`` ``[R, heads, capacity, D]`` keep every key in the row of the hypothesis that
        computed it, and ``key_rows`` ``[rows, S]`` names that row for each key of each hypothesis (reordering
        reorders only it). Returns the first S keys and values as ``[R * heads, S, D]`` views, and ``key_rows``."""
        key_rows = saved_state.get("key_rows")
        length, step, dim = 0 if key_rows is None else key_rows.size(1), k.size(1), k.size(2)
        caches = [saved_state.get("prev_key"), saved_state.get("prev_value")]
        if caches[0] is None or caches[0].size(0) < rows or caches[0].size(2) < length + step:  # grow: doubling
            capacity = max(16, 2 * (length + step))
            for i, old in enumerate(caches):
                new = k.new_empty(rows if old is None else max(rows, old.size(0)), heads, capacity, dim)
                if old is not None:
                    new[:old.size(0), :, :length] = old[:, :, :length]
                caches[i] = new
        views = []
        for cache, new in zip(caches, (k, v)):
            cache[:rows, :, length:length + step] = new.view(rows, heads, step, dim)
            views.append(cache[:, :, :length + step].reshape(-1, length + step, dim))
        own = torch.arange(rows, device=k.device).unsqueeze(1).expand(rows, step)
        key_rows = own if key_rows is None else torch.cat([key_rows, own], dim=1)
        saved_state.update(prev_key=caches[0], prev_value=caches[1], key_rows=key_rows)
        return (*views, key_rows)

    @staticmethod
    def _append(cache, new, order):
        """``cache`` ``[B, H, T, d]`` with its rows reordered by ``order`` (None: as they are) and ``new``
        ``[B' * H, t, d]`` appended, in one copy (fairseq's reordering, then a concatenation, copy it twice)."""
        rows, heads, length, dim = cache.shape
        rows = rows if order is None else order.numel()
        new = new.reshape(rows, heads, -1, dim)
        if torch.is_grad_enabled():  # out= ops record no gradients
            reordered = cache if order is None else cache.index_select(0, order)
            return torch.cat([reordered, new], dim=2).view(rows * heads, -1, dim)
        out = cache.new_empty(rows, heads, length + new.size(2), dim)
        if order is None:
            out[:, :, :length] = cache
        else:
            torch.index_select(cache, 0, order, out=out[:, :, :length])
        out[:, :, length:] = new
        return out.view(rows * heads, -1, dim)

    def _to_sentences(self, x, kv_bsz):
        """``[bsz * heads, T, n]`` rows of hypotheses as ``[kv_bsz * heads, beam * T, n]`` rows of their sentences."""
        _, tgt_len, n = x.shape
        beam = x.shape[0] // (kv_bsz * self.num_heads)
        return x.reshape(kv_bsz, beam, self.num_heads, tgt_len, n).transpose(1, 2).reshape(kv_bsz * self.num_heads,
                                                                                            beam * tgt_len, n)

    def _to_hypotheses(self, x, bsz):
        """Inverse of :meth:`_to_sentences`."""
        kv_heads, beam_tgt, n = x.shape
        kv_bsz, beam = kv_heads // self.num_heads, bsz * self.num_heads // kv_heads
        return x.view(kv_bsz, self.num_heads, beam, beam_tgt // beam, n).transpose(1, 2).reshape(
            bsz * self.num_heads, beam_tgt // beam, n)

    def _softmax_parts(self):
        return self.softmax_num_quantizer, self.softmax_den_quantizer, self.softmax_out_quantizer

    def _fused_softmax(self):
        """``(grids, bits)`` of the softmax parts for the fused inference ops (QAT and packed models alike), or None
        (training, gradients, parts that cannot be fused)."""
        return None if self.training or torch.is_grad_enabled() else fused_grids(*self._softmax_parts())

    def _decoding_plan(self):
        """``(fused softmax, kv_grid)`` of a decoding step's attention op (``_fused_softmax``, ``_kv_code_grid``)."""
        fused = self._fused_softmax()
        return fused, None if fused is None else self._kv_code_grid()

    def _kv_code_grid(self):
        """float32 ``[2, 2]`` (x_min and step of k and v) when both are quantized by calibrated single-range affine
        quantizers: decoding then keeps their 8-bit codes, a quarter of the float bytes, that the attention op reads
        as the quantizers' values. Else None (float keys and values)."""
        grids = []
        for q in (self.k_quantizer, self.v_quantizer):
            if type(q) is not ActivationQuantizer or not q._enabled or q.num_buckets != 1:
                return None
            grids.append(q.inference_grid())
            if grids[-1] is None:
                return None
        return torch.cat(grids, dim=1)

    @staticmethod
    def _codes(quantizer, x):
        """The 8-bit codes of ``quantizer`` for ``x`` (those its fake quantization multiplies by the step size)."""
        rows = x.reshape(-1, x.shape[-1])
        codes = run_fused(torch.ops.fq_plugin.quantize_affine_u8, quantizer.name, rows, quantizer.x_min,
                          quantizer.x_max, quantizer.bits)
        return codes.view(x.shape)

    def _softmax(self, scores, masked, query_valid):
        """Attention probabilities from the quantized numerator, denominator and output (seed 003 §3.2)."""
        fused = self._fused_softmax()
        if fused is not None:  # inference: one pass (QAT and packed models alike)
            grids, bits = fused
            return run_fused(torch.ops.fq_plugin.quantized_softmax, "softmax", scores, masked, *grids, bits)
        parts = self._softmax_parts()
        attn_valid = ~masked
        if query_valid is not None:
            attn_valid = attn_valid & query_valid[..., 0].t().view(scores.shape[0], 1, scores.shape[2], 1)
        valid = (attn_valid, attn_valid.any(-1, keepdim=True), attn_valid)
        quantizers = [None if q is None else partial(apply_quantizer, q, valid=v) for q, v in zip(parts, valid)]
        return softmax_from_parts(scores, masked, *quantizers)

    def _attend(self, q, k, v, masked, query_valid, bsz, kv_bsz):
        """``(attn [T, bsz, embed_dim], probs [bsz, heads, T, S])`` by ATen products and :meth:`_softmax`."""
        tgt_len, src_len = q.size(1), k.size(1)
        if kv_bsz != bsz:
            scores = self._to_hypotheses(torch.bmm(self._to_sentences(q, kv_bsz), k.transpose(1, 2)), bsz)
        else:
            scores = torch.bmm(q, k.transpose(1, 2))
        scores = scores.view(bsz, self.num_heads, tgt_len, src_len).float()
        probs = self._softmax(scores, masked, query_valid).type_as(q)
        probs_rows = self.dropout_module(probs.view(bsz * self.num_heads, tgt_len, src_len))
        if kv_bsz != bsz:
            attn = self._to_hypotheses(torch.bmm(self._to_sentences(probs_rows, kv_bsz), v), bsz)
        else:
            attn = torch.bmm(probs_rows, v)
        return attn.transpose(0, 1).contiguous().view(tgt_len, bsz, self.embed_dim), probs

    @staticmethod
    def _mask(attn_mask, key_padding_mask, bsz, kv_bsz, tgt_len, src_len, device):
        """bool, broadcasting to ``[bsz, heads, T, S]``: True where a query must not see a key."""
        masked = torch.zeros(1, 1, 1, 1, dtype=torch.bool, device=device)
        if attn_mask is not None:
            # fairseq masks with -inf (decoder) or -1e8 (encoder layers), or with a bool mask.
            blocked = attn_mask <= -1e4 if attn_mask.is_floating_point() else attn_mask.bool()
            masked = masked | blocked.view(1, 1, tgt_len, src_len)
        if key_padding_mask is not None:
            if kv_bsz != bsz:  # one row per sentence: one per hypothesis
                key_padding_mask = key_padding_mask.repeat_interleave(bsz // kv_bsz, dim=0)
            masked = masked | key_padding_mask.bool().view(bsz, 1, 1, src_len)
        return masked

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
        beam_group = 1
        if self.encoder_decoder_attention and incremental_state is not None and key is not None and value is key:
            key, key_padding_mask, beam_group = self._share_beams(key, key_padding_mask)
            value = key
        query_valid = valid_positions(query)

        # Decoding at inference on the CPU in float32: one op from q, k, v to the attention output (the C++ kernels; on
        # other devices its reference would loop over the keys), k and v kept as 8-bit codes where they can be.
        decoding = incremental_state is not None and query.device.type == "cpu" and query.dtype == torch.float32
        fused, kv_grid = self.step_cached("decoding", self._decoding_plan) if decoding else (None, None)
        q = apply_quantizer(self.q_quantizer, self.q_proj(query), query_valid) * self.scaling
        q = q.contiguous().view(tgt_len, bsz * heads, head_dim).transpose(0, 1)
        k = v = None
        kv_bsz = bsz if key is None else key.size(1)
        if key is not None:
            if kv_grid is not None:
                k = self._codes(self.k_quantizer, self.k_proj(key))
                v = self._codes(self.v_quantizer, self.v_proj(value))
            else:
                key_valid = None if key_padding_mask is None else ~key_padding_mask.t().unsqueeze(-1).bool()
                if self.self_attention and key_valid is None:
                    key_valid = query_valid
                k = apply_quantizer(self.k_quantizer, self.k_proj(key), key_valid)
                v = apply_quantizer(self.v_quantizer, self.v_proj(value), key_valid)
            k = k.contiguous().view(-1, kv_bsz * heads, head_dim).transpose(0, 1)
            v = v.contiguous().view(-1, kv_bsz * heads, head_dim).transpose(0, 1)

        key_rows = None
        if saved_state is not None:
            # Float self-attention keys of a fused decoding: kept where they were computed, read through key_rows.
            # (8-bit codes are copied in beam order instead: a quarter of the bytes, and the op then reads them from
            # the cache the copy just filled, which measured faster than reading them scattered from memory.)
            first_fused_float_step = fused is not None and kv_grid is None and "prev_key" not in saved_state
            in_place = not static_kv and ("key_rows" in saved_state or first_fused_float_step)
            if in_place:
                k, v, key_rows = self._store_step(saved_state, k, v, bsz, heads)
            elif "prev_key" in saved_state:
                if static_kv:
                    kv_bsz = saved_state["prev_key"].size(0)
                    k = saved_state["prev_key"].view(kv_bsz * heads, -1, head_dim)
                    v = saved_state["prev_value"].view(kv_bsz * heads, -1, head_dim)
                else:
                    order = saved_state.pop("pending_order", None)
                    k = self._append(saved_state["prev_key"], k, order)
                    v = self._append(saved_state["prev_value"], v, order)
            key_padding_mask = MultiheadAttention._append_prev_key_padding_mask(
                key_padding_mask=key_padding_mask,
                prev_key_padding_mask=saved_state.get("prev_key_padding_mask"),
                batch_size=kv_bsz, src_len=k.size(1), static_kv=static_kv)
            if not in_place:
                saved_state["prev_key"] = k.view(kv_bsz, heads, -1, head_dim)
                saved_state["prev_value"] = v.view(kv_bsz, heads, -1, head_dim)
            saved_state["prev_key_padding_mask"] = key_padding_mask
            if self.encoder_decoder_attention and "beam_group" not in saved_state:
                saved_state["beam_group"] = torch.tensor([beam_group])
            self._set_input_buffer(incremental_state, saved_state)
        src_len = k.size(1)
        # Encoder keys: the same mask at every step, until sentences finish (reorder_incremental_state drops it).
        keep_mask = static_kv and saved_state is not None and attn_mask is None
        masked = saved_state.get("step_mask") if keep_mask else None
        if masked is None:
            masked = self._mask(attn_mask, key_padding_mask, bsz, kv_bsz, tgt_len, src_len, q.device)
            if keep_mask:
                saved_state["step_mask"] = masked
        if fused is not None:
            grids, bits = fused
            attn, probs = run_fused(torch.ops.fq_plugin.quantized_attention, "softmax", q, k, v, masked, heads,
                                    kv_grid, *grids, bits, key_rows)
            attn = attn.view(tgt_len, bsz, embed_dim)
        else:
            if key_rows is not None:
                k, v = (gather_key_rows(t, key_rows, heads) for t in (k, v))
            attn, probs = self._attend(q, k, v, masked, query_valid, bsz, kv_bsz)
        requantized = getattr(self.out_proj, "requantizes", None)
        if self.out_proj_residual or requantized is None or not requantized(self.attn_out_quantizer, attn):
            attn = apply_quantizer(self.attn_out_quantizer, attn, query_valid)
        attn = self.out_proj(attn) + attn if self.out_proj_residual else self.out_proj(attn)

        weights = None
        if need_weights:
            weights = probs.float().transpose(1, 0)  # heads x B x T x S, as fairseq returns them
            if not need_head_weights:
                weights = weights.mean(dim=0)
        return attn, weights
