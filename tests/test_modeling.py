"""endprompt.modeling: the tiny Llama, local loading, and the pre-RoPE query/key probe against eager attention."""

import numpy as np
import pytest
import torch

from endprompt import bound as B
from endprompt import modeling as M
from endprompt import rope as R
from tests.tolerances import ATTN_PROBS_ATOL


def test_probe_reproduces_eager_attention_through_the_score_polynomial():
    """L1 on a real model: softmax over S(m - n) / sqrt(D) from the probed q, k equals eager attention's weights."""
    rope = R.for_extension("yarn", 32, 256, rope_theta=10000.0)
    model = M.build_tiny_llama(vocab_size=64, hidden_size=64, num_heads=4, num_kv_heads=2, rope=rope,
                               max_position_embeddings=256, attn_implementation="eager")
    ids = torch.randint(0, 64, (1, 12), generator=torch.Generator().manual_seed(0))
    pos = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 252, 253, 254, 255]])  # an EndPrompt layout
    q, k = M.query_key_states(model, ids)
    assert q.shape == (4, 12, 16) and k.shape == (2, 12, 16)
    with torch.no_grad():
        attn = model(input_ids=ids, position_ids=pos, attention_mask=torch.ones_like(ids), output_attentions=True,
                     use_cache=False).attentions[0][0].double().numpy()  # (H, T, T)
    inv_freq, af = R.compute_inv_freq(rope, 16)
    p = pos[0].numpy()
    for h in range(4):
        kv = h // 2  # grouped-query attention: two query heads share a key head
        scores = np.full((12, 12), -np.inf)
        for i in range(12):
            c = B.score_coefficients(q[h, i], k[kv, : i + 1], attention_factor=af, scale=16**-0.5)  # (i+1, J)
            scores[i, : i + 1] = [B.score([p[i] - p[j]], c[j], inv_freq)[0, 0] for j in range(i + 1)]
        probs = np.exp(scores - scores.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        np.testing.assert_allclose(probs, attn[h], atol=ATTN_PROBS_ATOL)


def test_save_and_load_local_checkpoint(tmp_path):
    model = M.build_tiny_llama(vocab_size=64, hidden_size=32, num_heads=2,
                               rope=R.for_extension("linear", 32, 256, rope_theta=10000.0), max_position_embeddings=256)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = M.load_causal_lm(tmp_path / "ckpt", dtype=torch.float32)
    assert M.rope_of(loaded) == R.RopeScaling(rope_type="linear", factor=8.0)
    ids = torch.arange(10)[None]
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits)
    with pytest.raises(FileNotFoundError, match="no checkpoint directory at '/nonexistent'"):
        M.load_causal_lm("/nonexistent")


def test_bad_config():
    with pytest.raises(ValueError, match="hidden_size=100 must be divisible by num_heads=3"):
        M.tiny_llama_config(hidden_size=100, num_heads=3)


def _tiny_checkpoint(path, vocab_size: int, original_len: int = 64):
    from tests.conftest import make_tokenizer

    tokenizer = make_tokenizer()
    model = M.build_tiny_llama(vocab_size=vocab_size, hidden_size=32, num_heads=2,
                               max_position_embeddings=original_len)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return tokenizer


def test_a_checkpoint_brings_its_tokenizer_and_length(tmp_path):
    from endprompt.config import load_config

    saved = _tiny_checkpoint(tmp_path / "ckpt", vocab_size=64, original_len=64)
    cfg = load_config(model={"path": str(tmp_path / "ckpt")}, recipe={"a": 24, "b": 4, "target_len": 512})
    assert cfg.model.tokenizer is None and cfg.model.original_len is None  # nothing contradicts the checkpoint
    prepared = M.prepare_model(cfg)
    assert prepared.original_len == 64 and prepared.rope.factor == 8.0
    assert prepared.tokenizer.get_vocab() == saved.get_vocab()
    scratch = load_config(recipe={"a": 24, "b": 4, "target_len": 512}).model  # no checkpoint: the tiny defaults
    assert (scratch.tokenizer, scratch.original_len) == ("byte", 256)


def test_a_tokenizer_larger_than_the_vocabulary_is_an_error(tmp_path):
    from endprompt.config import load_config

    _tiny_checkpoint(tmp_path / "ckpt", vocab_size=64)
    cfg = load_config(model={"path": str(tmp_path / "ckpt"), "tokenizer": "byte"},
                      recipe={"a": 24, "b": 4, "target_len": 512})
    with pytest.raises(ValueError, match="has 260 tokens .* the model's vocabulary has 64"):
        M.prepare_model(cfg)
    cfg = load_config(model={"path": str(tmp_path / "ckpt")}, recipe={"a": 24, "b": 4, "target_len": 64})
    with pytest.raises(ValueError, match="recipe.target_len=64 must exceed the base's context 64"):
        M.prepare_model(cfg)
