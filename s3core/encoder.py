"""Per-modality MoE Transformer encoders and the multimodal model that holds them.

Encoder (S3_METHOD.md): linear input projection -> L pre-LN Transformer blocks whose FFN is a
fine-grained MoE -> masked mean pooling -> projection head -> z_m on the unit sphere. Where the
paper is silent, S3Config.norm_placement (pre / post-LN) and .pooling (mean / gate_mass / last)
choose; the defaults are the above.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s3core.config import MoEConfig, S3Config
from s3core.moe import DenseFFN, MoEFFN
from s3core.stage_specs import is_router_param  # noqa: F401  (Stage 2's parameters, named here)


class EncoderOutput(NamedTuple):
    z: Tensor                      # (B, proj_dim), L2-normalised (each part of it with S3Config.z_split)
    aux_loss: Tensor               # scalar: mean over layers of the weighted L_aux
    intermediates: dict            # pooled (B, D); per-layer routing stats (lists over layers)


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, moe_cfg: MoEConfig, dropout: float, post_ln: bool = False):
        super().__init__()
        self.n_heads = n_heads
        self.post_ln = post_ln          # S3Config.norm_placement == 'post': x = LN(x + sublayer(x))
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.attn_out = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.ffn = MoEFFN(moe_cfg)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor, keep_ratio: float):
        B, T, D = x.shape
        q, k, v = self.qkv(x if self.post_ln else self.ln1(x)).split(D, dim=2)
        q, k, v = (t.view(B, T, self.n_heads, D // self.n_heads).transpose(1, 2) for t in (q, k, v))
        attn_mask = mask[:, None, None, :]                               # (B, 1, 1, T) keys
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, h, T, d)
        x = x + self.dropout(self.attn_out(a.transpose(1, 2).reshape(B, T, D)))
        if self.post_ln:
            x = self.ln1(x)
            moe = self.ffn(x, token_mask=mask, keep_ratio=keep_ratio)
            return self.ln2(x + self.dropout(moe.output)), moe
        moe = self.ffn(self.ln2(x), token_mask=mask, keep_ratio=keep_ratio)
        return x + self.dropout(moe.output), moe


class ModalityEncoder(nn.Module):
    """One modality's encoder.

    Args:
        input_dim: D_m, the modality's feature width.
        max_len: the longest sequence T_m it will see (learned positions).
        cfg: S3Config (d_model, n_layers, n_heads, MoE fields, proj_dim, dropout).
    """

    def __init__(self, input_dim: int, max_len: int, cfg: S3Config):
        super().__init__()
        self.input_proj = nn.Linear(input_dim, cfg.d_model)
        self.pos = nn.Parameter(torch.zeros(max_len, cfg.d_model))
        nn.init.normal_(self.pos, std=0.02)
        moe_cfg = cfg.moe()
        self.blocks = nn.ModuleList(Block(cfg.d_model, cfg.n_heads, moe_cfg, cfg.dropout,
                                          post_ln=cfg.norm_placement == "post") for _ in range(cfg.n_layers))
        self.pooling = cfg.pooling
        self.blocks[-1].ffn.want_gate_mass = cfg.pooling == "gate_mass"
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_model), nn.GELU(),
                                  nn.Linear(cfg.d_model, cfg.proj_dim))
        self.z_split = cfg.z_split

    def forward(self, x: Tensor, mask: Tensor, keep_ratio: float = 1.0) -> EncoderOutput:
        """
        Args:
            x: (B, T, D_m) features; mask: (B, T) bool, True for real steps.
            keep_ratio: Stage 3's p, applied in every MoE layer.
        """
        B, T, _ = x.shape
        # a sample with no real step would make attention NaN: let it attend to its first step
        empty = ~mask.any(dim=1)
        if empty.any():
            mask = mask.clone()
            mask[empty, 0] = True
        h = self.input_proj(x) + self.pos[:T]                            # (B, T, d_model)
        aux_total = h.new_zeros((), dtype=torch.float32)
        entropy = []                    # per layer (H_local, H_global), with their graphs
        layer_stats = {"load_balance": [], "local_entropy": [], "global_entropy": [],
                       "expert_load": [], "kept_fraction": []}
        for block in self.blocks:
            h, moe = block(h, mask, keep_ratio)
            aux_total = aux_total + moe.aux_loss
            entropy.append((moe.aux_parts["local_entropy"], moe.aux_parts["global_entropy"]))
            for name, value in moe.aux_parts.items():
                layer_stats[name].append(value.detach())
            layer_stats["expert_load"].append(moe.expert_load)
            layer_stats["kept_fraction"].append(moe.kept_fraction)
        h = self.ln_f(h)
        pooled = pool(h, mask, self.pooling, moe.gate_mass)             # (B, d_model)
        z = normalise_parts(self.head(pooled).float(), self.z_split)     # (B, proj_dim)
        aux = aux_total / len(self.blocks)
        return EncoderOutput(z, aux, {"pooled": pooled, "routing": layer_stats, "entropy": entropy})


def normalise_parts(u: Tensor, split: int) -> Tensor:
    """(B, P) -> (B, P) on the unit sphere: whole (split 0), or its first `split` columns (the
    shared part) and the rest (the private part) each on their own (S3Config.z_split)."""
    if not split:
        return F.normalize(u, dim=-1)
    return torch.cat([F.normalize(u[:, :split], dim=-1), F.normalize(u[:, split:], dim=-1)], dim=1)


def pool(h: Tensor, mask: Tensor, pooling: str = "mean", gate_mass: Tensor | None = None) -> Tensor:
    """(B, T, D) tokens -> (B, D) under S3Config.pooling: 'mean' over the real steps; 'gate_mass':
    each real step weighted by its kept gate mass (a token whose pairs were all pruned weighs 0;
    a sample with no kept pair pools to 0); 'last': the last real step."""
    if pooling == "last":
        T = mask.shape[1]
        last = T - 1 - mask.flip(1).to(torch.int8).argmax(1)                                # (B,)
        return h[torch.arange(h.shape[0], device=h.device), last]
    m = mask.unsqueeze(2).to(h.dtype)                                    # (B, T, 1)
    if pooling == "gate_mass":
        w = m * gate_mass.unsqueeze(2).to(h.dtype)
        return (h * w).sum(1) / w.sum(1).clamp_min(1e-9)
    return (h * m).sum(1) / m.sum(1)


class S3Model(nn.Module):
    """One encoder per modality. forward maps {name: (x, mask)} -> {name: EncoderOutput}."""

    def __init__(self, dims: dict[str, int], seq_lens: dict[str, int], cfg: S3Config,
                 task_head: nn.Module | None = None):
        """task_head: a module on [z_1, ..., z_M] that a method trains with the encoders (the
        supervised control's linear classifier); None for the self-supervised methods. cfg is
        validated by the caller (run_trial, model_from_state): the model trusts it."""
        super().__init__()
        self.cfg = cfg
        self.modalities = tuple(dims)
        self.encoders = nn.ModuleDict({m: ModalityEncoder(dims[m], seq_lens[m], cfg) for m in dims})
        self.task_head = task_head

    def forward(self, inputs: dict[str, tuple[Tensor, Tensor]], keep_ratio: float = 1.0) -> dict[str, EncoderOutput]:
        return {m: self.encoders[m](*inputs[m], keep_ratio=keep_ratio) for m in self.modalities}


def set_trainable(model: nn.Module, predicate) -> list[str]:
    """Freeze every parameter whose name fails `predicate`; return the trainable names."""
    names = []
    for name, p in model.named_parameters():
        p.requires_grad_(bool(predicate(name)))
        if p.requires_grad:
            names.append(name)
    return names


__all__ = ["EncoderOutput", "ModalityEncoder", "S3Model", "is_router_param", "set_trainable", "DenseFFN", "pool",
           "normalise_parts"]
