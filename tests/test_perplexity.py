"""endprompt.evaluate.perplexity: the truncated and sliding forms against a direct computation."""

import numpy as np
import pytest
import torch

from endprompt import modeling as M
from endprompt.evaluate import perplexity as PPL
from tests.tolerances import REDUCTION_RTOL


def test_perplexity_forms_against_direct_computation():
    model = M.build_tiny_llama(vocab_size=64, hidden_size=32, num_heads=2, max_position_embeddings=512)
    doc = np.random.default_rng(0).integers(0, 64, 300)
    ppl, n = PPL.truncated_perplexity(model, [doc, doc[:10]], 100)
    with torch.no_grad():
        logits = model(torch.as_tensor(doc[:100])[None]).logits[0]
    direct = torch.nn.functional.cross_entropy(logits[:-1], torch.as_tensor(doc[1:100])).exp().item()
    assert n == 99 and ppl == pytest.approx(direct, rel=REDUCTION_RTOL)
    ppl, n = PPL.sliding_perplexity(model, [doc], 100, stride=50)
    assert n == 299  # every token after the first is scored exactly once
    with pytest.raises(ValueError, match="no document has 1000 tokens"):
        PPL.truncated_perplexity(model, [doc], 1000)
