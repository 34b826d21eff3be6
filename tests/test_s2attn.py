"""endprompt.s2attn: LongLoRA's shifted sparse attention against explicit masks, in a real Llama."""

import pytest
import torch

from endprompt import modeling as M
from endprompt import rope as R
from endprompt import s2attn
from tests.tolerances import ATTN_ATOL, ATTN_RTOL, LOGITS_ATOL, LOGITS_CHANGED, LOGITS_CHANGED_STRUCTURALLY


def model(attn="sdpa"):
    return M.build_tiny_llama(vocab_size=64, hidden_size=64, num_heads=4, num_kv_heads=2,
                              rope=R.for_extension("linear", 16, 64, rope_theta=10000.0), max_position_embeddings=64,
                              attn_implementation=attn)


def segments_mask(T, cu_seqlens):
    """(T, T) causal attention inside the varlen segments [cu[i], cu[i+1]), as flash_attn_varlen_func computes it."""
    seg = torch.zeros(T, dtype=torch.long)
    for start in cu_seqlens[1:-1]:
        seg[start:] += 1
    i = torch.arange(T)
    return (i[None, :] <= i[:, None]) & (seg[:, None] == seg[None, :])


def reference_mask(T, G, H):
    """LongLoRA's flash path, re-implemented from its cu_seqlens: heads h < H/2 cut at 0, G, 2G, ..., the others at
    G/2, 3G/2, ..., T - G/2 (the first and last half groups stand alone); (H, T, T)."""
    plain = segments_mask(T, list(range(0, T, G)) + [T])
    shifted = segments_mask(T, [0] + list(range(G // 2, T, G)) + [T])
    return torch.stack([plain] * (H // 2) + [shifted] * (H // 2))


def test_reference_shifted_groups_do_not_wrap():
    mask = reference_mask(16, 4, 4)
    assert not mask[2:, 14:, :2].any()  # rows 14-15 of the shifted heads: only their own half group 14..15
    assert mask[2:, 15, 14:].all() and mask[2:, 1, :2].all()


@pytest.mark.parametrize("ratio,T", [(0.25, 32), (0.5, 32), (0.25, 16)])
def test_matches_longlora_flash_segments(ratio, T):
    torch.manual_seed(0)
    B, H, D = 2, 4, 8
    q, k, v = torch.randn(3, B, H, T, D).unbind(0)
    s2attn.register(ratio)
    module = torch.nn.Module().train()
    out, _ = s2attn.s2_attention_forward(module, q, k, v, None, scaling=D**-0.5)  # (B, T, H, D)
    mask = reference_mask(T, int(T * ratio), H)[None]  # (1, H, T, T)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)
    torch.testing.assert_close(out, ref, atol=ATTN_ATOL, rtol=ATTN_RTOL)


def test_one_group_splits_only_the_shifted_heads_and_eval_is_sdpa():
    s2attn.register(1.0)  # one group: plain heads see the causal prefix, shifted heads the halves [0, T/2), [T/2, T)
    torch.manual_seed(1)
    m = model()
    ids = torch.randint(0, 64, (2, 32))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        full = m(input_ids=ids, attention_mask=mask).logits
        m.set_attn_implementation(s2attn.NAME)
        m.train()
        grouped = m(input_ids=ids, attention_mask=mask).logits
        m.eval()
        evaluated = m(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(grouped[:, :16], full[:, :16], atol=LOGITS_ATOL, rtol=0)
    assert (grouped[:, 16:] - full[:, 16:]).abs().amax() > LOGITS_CHANGED_STRUCTURALLY
    torch.testing.assert_close(evaluated, full, atol=LOGITS_ATOL, rtol=0)


def test_in_model_groups_limit_what_a_token_sees_and_padding_is_respected():
    s2attn.register(0.25)
    m = model()
    m.set_attn_implementation(s2attn.NAME)
    m.train()
    ids = torch.randint(0, 64, (1, 32), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        base = m(input_ids=ids, attention_mask=mask).logits
        far = ids.clone()
        far[0, 0] = (far[0, 0] + 1) % 64
        moved = m(input_ids=far, attention_mask=mask).logits
        # G = 8. Layer 1: token 0 reaches its plain group 0..7 and, through the shifted heads, the half group 0..3
        # (no wrap: the last half group 28..31 stands alone). Layer 2 adds 8..11 (shifted group 4..11). Tokens 12..31
        # are out of reach in two layers; with a wrap, 28..31 would see token 0.
        delta = (moved[0] - base[0]).abs().amax(-1)  # (T,)
        assert delta[12:].max() < LOGITS_ATOL
        assert delta[:12].min() > LOGITS_CHANGED
        padded = torch.cat([ids, torch.zeros(1, 8, dtype=torch.long)], dim=1)
        pmask = torch.cat([mask, torch.zeros(1, 8, dtype=torch.long)], dim=1)
        out = m(input_ids=padded, attention_mask=pmask).logits
        assert torch.isfinite(out).all()


def test_bad_length():
    s2attn.register(0.25)
    q = torch.randn(1, 2, 30, 4)
    with pytest.raises(ValueError, match="multiple of an even group size"):
        s2attn.s2_attention_forward(torch.nn.Module().train(), q, q, q, None)
