"""Shared transformer blocks (recursionlab.nn): norms, SwiGLU, RoPE, attention + KV cache, blocks, init."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from recursionlab.nn.attention import Attention, KVCache
from recursionlab.nn.blocks import TransformerBlock
from recursionlab.nn.init import lecun_trunc_normal_, trunc_normal_corrected_, truncated_normal_std
from recursionlab.nn.mlp import SwiGLU, swiglu_inner_dim
from recursionlab.nn.norms import RMSNorm, rms_norm
from recursionlab.nn.rotary import RotaryEmbedding, apply_rotary


def test_rms_norm_unit_rms_and_fp32_compute():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 16) * 7
    y = rms_norm(x)
    assert torch.allclose(y.pow(2).mean(-1), torch.ones(3, 5), atol=1e-4)
    xb = x.bfloat16()
    yb = rms_norm(xb)
    assert yb.dtype == torch.bfloat16
    assert torch.allclose(yb.float(), rms_norm(xb.float()), atol=1e-2)
    assert list(RMSNorm(16, learnable=False).parameters()) == []
    norm = RMSNorm(16, learnable=True)
    with torch.no_grad():
        norm.weight.fill_(2.0)
    assert torch.allclose(norm(x), 2 * y, atol=1e-6)
    with pytest.raises(ValueError, match="last axis"):
        norm(torch.randn(2, 8))
    with pytest.raises(TypeError):
        rms_norm(torch.ones(3, dtype=torch.long))


def test_swiglu_widths_and_formula():
    assert swiglu_inner_dim(512, 4.0) == 1536  # HRM/TRM channel MLP
    assert swiglu_inner_dim(97, 4.0) == 512  # TRM token mixer, Sudoku (81 + 16 prefix)
    assert swiglu_inner_dim(916, 4.0) == 2560  # TRM token mixer, Maze/ARC
    torch.manual_seed(0)
    mlp = SwiGLU(8, inner=12)
    x = torch.randn(2, 3, 8)
    w = mlp.gate_up.weight
    ref = (F.silu(x @ w[:12].T) * (x @ w[12:].T)) @ mlp.down.weight.T
    assert torch.allclose(mlp(x), ref, atol=1e-6)
    assert sum(p.numel() for p in SwiGLU(512).parameters()) == 1_572_864 + 786_432
    with pytest.raises(ValueError):
        SwiGLU(0)


def test_rope_relative_positions_and_rotation():
    torch.manual_seed(0)
    rope = RotaryEmbedding(head_dim=8, max_positions=32)
    q = torch.randn(1, 1, 1, 8).expand(1, 1, 32, 8)
    k = torch.randn(1, 1, 1, 8).expand(1, 1, 32, 8)
    cos, sin = rope(torch.arange(32))
    qr, kr = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    # a rotation keeps norms ...
    assert torch.allclose(qr.norm(dim=-1), q.norm(dim=-1), atol=1e-5)
    # ... and the score depends only on the offset between positions
    scores = qr[0, 0] @ kr[0, 0].T  # (32, 32)
    assert torch.allclose(scores[3, 1], scores[10, 8], atol=1e-5)
    assert torch.allclose(scores[5, 9], scores[20, 24], atol=1e-5)
    # position 0 is the identity
    assert torch.allclose(qr[..., 0, :], q[..., 0, :])
    with pytest.raises(ValueError):
        rope(torch.tensor([40]))
    with pytest.raises(ValueError):
        RotaryEmbedding(7, 10)


def test_attention_matches_manual_softmax():
    torch.manual_seed(0)
    att = Attention(16, 4, causal=True).double()
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    q, k, v = att.qkv(x).view(2, 6, 3, 4, 4).permute(2, 0, 3, 1, 4)
    s = q @ k.transpose(-1, -2) / math.sqrt(4)
    s = s.masked_fill(~torch.ones(6, 6, dtype=torch.bool).tril(), float("-inf"))
    ref = att.out((s.softmax(-1) @ v).transpose(1, 2).reshape(2, 6, 16))
    assert torch.allclose(att(x), ref, atol=1e-10)
    with pytest.raises(ValueError):
        Attention(10, 3, causal=False)


@pytest.mark.parametrize("qk_bias", [False, True])
def test_kv_cache_incremental_decoding_equals_full_forward(qk_bias):
    torch.manual_seed(0)
    att = Attention(32, 4, causal=True, qk_bias=qk_bias)
    if qk_bias:
        with torch.no_grad():
            att.qk_bias.normal_()
    rope = RotaryEmbedding(8, 64)
    x = torch.randn(2, 11, 32)
    full = att(x, rope=rope(torch.arange(11)))
    cache = KVCache()
    # a prompt of 4 tokens, then one token at a time, then a chunk of 3
    pieces, start = [], 0
    for size in (4, 1, 1, 1, 1, 3):
        pos = torch.arange(start, start + size)
        pieces.append(att(x[:, start : start + size], rope=rope(pos), cache=cache))
        start += size
    assert cache.length == 11
    assert torch.allclose(torch.cat(pieces, dim=1), full, atol=1e-5)
    # blocks thread the cache through too (pre-norm, causal)
    block = TransformerBlock(32, 4, norm="pre", causal=True)
    full_b = block(x, rope=rope(torch.arange(11)))
    cache_b = KVCache()
    steps = [block(x[:, t : t + 1], rope=rope(torch.arange(t, t + 1)), cache=cache_b) for t in range(11)]
    assert torch.allclose(torch.cat(steps, dim=1), full_b, atol=1e-5)
    cache_b.reset()
    assert cache_b.length == 0


def test_non_causal_attention_sees_the_future():
    torch.manual_seed(0)
    att = Attention(16, 2, causal=False)
    x = torch.randn(1, 5, 16)
    y = att(x)
    x2 = x.clone()
    x2[:, -1] += 1.0
    assert not torch.allclose(att(x2)[:, 0], y[:, 0])  # position 0 depends on position 4


@pytest.mark.parametrize("norm", ["post", "pre", "sandwich"])
def test_block_norm_placements(norm):
    torch.manual_seed(0)
    block = TransformerBlock(16, 2, norm=norm)
    x = torch.randn(2, 5, 16) * 3
    y = block(x)
    assert y.shape == x.shape
    att, mlp = block.mixer, block.mlp
    if norm == "post":
        h = rms_norm(x + att(x))
        ref = rms_norm(h + mlp(h))
        assert torch.allclose(y.pow(2).mean(-1), torch.ones(2, 5), atol=1e-4)  # output is normalised
    elif norm == "pre":
        h = x + att(rms_norm(x))
        ref = h + mlp(rms_norm(h))
    else:
        h = x + rms_norm(att(rms_norm(x)))
        ref = h + rms_norm(mlp(rms_norm(h)))
    assert torch.allclose(y, ref, atol=1e-5)
    assert sum(p.numel() for p in block.parameters()) == 4 * 16 * 16 + 3 * 16 * 256
    learn = TransformerBlock(16, 2, norm=norm, learnable_norm=True)
    n_norms = 2 if norm == "sandwich" else 1
    assert (
        sum(p.numel() for p in learn.parameters()) - sum(p.numel() for p in block.parameters())
        == 2 * 16 * n_norms
    )


def test_mlp_mixer_block_mixes_over_sequence_with_sequence_norm():
    torch.manual_seed(0)
    block = TransformerBlock(16, 2, mixer="mlp", seq_len=7)
    x = torch.randn(2, 7, 16)
    tok = block.mixer
    assert tok.dim == 7 and tok.inner == swiglu_inner_dim(7)
    xt = x.transpose(1, 2)  # (B, D, T)
    h = rms_norm(xt + tok(xt)).transpose(1, 2)  # RMSNorm over the sequence axis
    ref = rms_norm(h + block.mlp(h))
    assert torch.allclose(block(x), ref, atol=1e-5)
    # per-block parameter count of TRM-MLP at T=97, D=512: token MLP 148,992 + channel MLP 2,359,296
    with torch.device("meta"):
        big = TransformerBlock(512, 8, mixer="mlp", seq_len=97)
    assert sum(p.numel() for p in big.mixer.parameters()) == 148_992
    assert sum(p.numel() for p in big.parameters()) == 148_992 + 2_359_296
    with pytest.raises(ValueError, match="seq_len"):
        TransformerBlock(16, 2, mixer="mlp")
    with pytest.raises(ValueError, match="seq_len=7"):
        block(torch.randn(2, 8, 16))
    with pytest.raises(ValueError):
        TransformerBlock(16, 2, norm="middle")
    with pytest.raises(ValueError):
        TransformerBlock(16, 2, mixer="conv")


def test_hrm_block_parameter_count():
    with torch.device("meta"):
        block = TransformerBlock(512, 8)
    assert sum(p.numel() for p in block.mixer.parameters()) == 1_048_576
    assert sum(p.numel() for p in block.parameters()) == 3_407_872


def test_corrected_truncated_normal_has_target_std():
    assert truncated_normal_std(-2, 2) == pytest.approx(0.8796, abs=1e-4)
    torch.manual_seed(0)
    t = trunc_normal_corrected_(torch.empty(200_000), std=0.5)
    assert t.std().item() == pytest.approx(0.5, rel=0.01)
    assert t.abs().max().item() <= 2 * 0.5 / 0.8796 + 1e-6  # truncated at 2 sigma of the underlying normal
    w = lecun_trunc_normal_(torch.empty(256, 400))
    assert w.std().item() == pytest.approx(1 / math.sqrt(400), rel=0.02)
    with pytest.raises(ValueError):
        lecun_trunc_normal_(torch.empty(5))
