"""endprompt.evaluate.dynamic_rope: dynamic NTK evaluated at a fixed length, whatever the order of the lengths."""

import numpy as np
import pytest
import torch

from endprompt import modeling as M
from endprompt import rope as R
from endprompt.evaluate import evaluate
from endprompt.evaluate.dynamic_rope import pin_dynamic_rope
from tests.tolerances import ROPE_CHANGED, ROPE_RTOL

HEAD_DIM = 32


def dynamic_model(original=64):
    rope = R.for_extension("dynamic", original, 8 * original, rope_theta=10000.0)
    return M.build_tiny_llama(vocab_size=64, hidden_size=64, num_heads=2, rope=rope,
                              max_position_embeddings=8 * original)


def inv_freq(model) -> np.ndarray:
    return model.model.rotary_emb.inv_freq.double().numpy()


def forward(model, length):
    ids = torch.zeros(1, length, dtype=torch.long)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=torch.ones_like(ids))


def test_transformers_keeps_the_longest_pass_and_pinning_gives_the_length_s_frequencies():
    model = dynamic_model()
    cfg = R.from_transformers_config(model.config)
    forward(model, 300)
    forward(model, 100)  # the trap: transformers keeps the 300-token frequencies
    assert not np.allclose(inv_freq(model), R.compute_inv_freq(cfg, HEAD_DIM, 100)[0], rtol=ROPE_CHANGED)
    assert pin_dynamic_rope(model, 100) == 1
    np.testing.assert_allclose(inv_freq(model), R.compute_inv_freq(cfg, HEAD_DIM, 100)[0], rtol=ROPE_RTOL)
    forward(model, 100)  # a pass up to the pinned length changes nothing
    np.testing.assert_allclose(inv_freq(model), R.compute_inv_freq(cfg, HEAD_DIM, 100)[0], rtol=ROPE_RTOL)
    pin_dynamic_rope(model, None)  # back to the fresh state: the original frequencies
    np.testing.assert_allclose(inv_freq(model), R.compute_inv_freq(cfg, HEAD_DIM)[0], rtol=ROPE_RTOL)
    assert model.model.rotary_emb.max_seq_len_cached == 64


def test_other_models_are_untouched():
    model = M.build_tiny_llama(vocab_size=64, hidden_size=64, num_heads=2,
                               rope=R.for_extension("linear", 64, 512, rope_theta=1e4),
                               max_position_embeddings=512)
    before = inv_freq(model).copy()
    assert pin_dynamic_rope(model, 300) == 0
    np.testing.assert_array_equal(inv_freq(model), before)
    with pytest.raises(ValueError, match="length must be >= 1"):
        pin_dynamic_rope(model, 0)


def test_evaluation_does_not_depend_on_the_order_of_lengths():
    docs = [np.random.default_rng(i).integers(0, 64, 1024) for i in range(2)]
    kw = {"ppl_docs": docs, "ppl_stride": 128, "progress": False}
    up = evaluate(dynamic_model(), None, "perplexity", [128, 512], **kw)
    down = evaluate(dynamic_model(), None, "perplexity", [512, 128], **kw)
    key = ["length", "metric"]
    up, down = up.sort_values(key).reset_index(drop=True), down.sort_values(key).reset_index(drop=True)
    np.testing.assert_array_equal(up["score"], down["score"])  # the same computation, bit for bit
