"""endprompt.s2attn: LongLoRA's shifted sparse attention against explicit masks, in a real Llama."""

import pytest
import torch

from endprompt import modeling as M
from endprompt import rope as R
from endprompt import s2attn
from tests.tolerances import LOGITS_ATOL


def model(attn="sdpa"):
    return M.build_tiny_llama(vocab_size=64, hidden_size=64, num_heads=4, num_kv_heads=2,
                              rope=R.for_extension("linear", 16, 64), max_position_embeddings=64,
                              attn_implementation=attn)


def reference_mask(T, G, H, pad_from=None):
    """Explicit (H, T, T) masks: head h < H/2 attends within groups i // G, the others within groups shifted by G/2."""
    i = torch.arange(T)
    causal = i[None, :] <= i[:, None]
    plain = (i[:, None] // G) == (i[None, :] // G)
    shifted_group = ((i - G // 2) % T) // G
    shifted = shifted_group[:, None] == shifted_group[None, :]
    masks = torch.stack([causal & plain] * (H // 2) + [causal & shifted] * (H // 2))
    if pad_from is not None:
        masks[:, :, pad_from:] = False
    return masks


@pytest.mark.parametrize("ratio", [0.25, 0.5])
def test_matches_explicit_shifted_group_masks(ratio):
    torch.manual_seed(0)
    B, H, T, D = 2, 4, 32, 8
    q, k, v = torch.randn(3, B, H, T, D).unbind(0)
    s2attn.register(ratio)
    module = torch.nn.Module().train()
    out, _ = s2attn.s2_attention_forward(module, q, k, v, None, scaling=D**-0.5)  # (B, T, H, D)
    mask = reference_mask(T, int(T * ratio), H)[None]  # (1, H, T, T)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)


def test_one_group_is_full_causal_attention_and_eval_is_sdpa():
    s2attn.register(1.0)  # one group: the shifted heads see the whole sequence in the original causal order
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
    torch.testing.assert_close(grouped, full, atol=LOGITS_ATOL, rtol=0)
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
        # G = 8. Layer 1: token 0 reaches its plain group 0..7 and, through the shifted heads, the wrapped group
        # {28..31, 0..3} (tokens 28..31 come after 0: the flow is causal). Layer 2 adds 8..11 (shifted group 4..11);
        # 24..27 share a plain group with 28..31 but precede them. Tokens 12..27 are out of reach in two layers.
        delta = (moved[0] - base[0]).abs().amax(-1)  # (T,)
        assert delta[12:28].max() < LOGITS_ATOL
        assert delta[:12].min() > 1e-4 and delta[28:].min() > 1e-4
        padded = torch.cat([ids, torch.zeros(1, 8, dtype=torch.long)], dim=1)
        pmask = torch.cat([mask, torch.zeros(1, 8, dtype=torch.long)], dim=1)
        out = m(input_ids=padded, attention_mask=pmask).logits
        assert torch.isfinite(out).all()


def test_bad_length():
    s2attn.register(0.25)
    q = torch.randn(1, 2, 30, 4)
    with pytest.raises(ValueError, match="multiple of an even group size"):
        s2attn.s2_attention_forward(torch.nn.Module().train(), q, q, q, None)
