"""A small pre-LN text transformer for both languages, written with plain ops that export and quantize cleanly.

Pooling is a masked mean over non-pad tokens rather than an EOS gather: it needs no argmax/gather on device and
works the same for English word pieces and Chinese characters.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1)) * (c // self.heads) ** -0.5 + bias
        y = attn.softmax(dim=-1) @ v
        return self.out(y.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.ln2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), bias)
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class TextTower(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        embed_dim: int,
        context_length: int = 32,
        width: int = 128,
        layers: int = 2,
        heads: int = 2,
        mlp_ratio: float = 4.0,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.pos_embedding = nn.Parameter(torch.randn(context_length, width) * 0.01)
        self.blocks = nn.ModuleList([Block(width, heads, mlp_ratio) for _ in range(layers)])
        self.ln_final = nn.LayerNorm(width)
        self.proj = nn.Linear(width, embed_dim, bias=False)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        self.context_length = context_length
        self.width = width
        self.embed_dim = embed_dim
        self.pad_id = pad_id
        self.vocab_size = vocab_size

    def forward_features(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (B, L) -> (embedding (B, D), pooled hidden (B, width))."""
        keep = (ids != self.pad_id).to(self.pos_embedding.dtype)  # (B, L)
        bias = ((1.0 - keep) * -1e4)[:, None, None, :]
        x = self.token_embedding(ids) + self.pos_embedding[: ids.shape[1]]
        for block in self.blocks:
            x = block(x, bias)
        x = self.ln_final(x)
        pooled = (x * keep[..., None]).sum(1) / keep.sum(1, keepdim=True).clamp(min=1.0)
        return self.proj(pooled), pooled

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.forward_features(ids)[0]
