"""SharedLLM on a tiny random Llama: causality, injection off == base, selection, save/reload, what trains."""

import pytest
import torch

from endprompt.modeling import build_tiny_llama
from endprompt.sharedllm import SharedLLM, SharedLLMConfig, load_sharedllm, save_sharedllm
from endprompt.sharedllm.tree import select_nodes, split_tree
from tests.tolerances import BITWISE, LOGITS_ATOL, LOGITS_CHANGED


def make(init="normal", **kwargs):
    base = build_tiny_llama(seed=0, num_layers=3, hidden_size=64, num_heads=4, num_kv_heads=2,
                            max_position_embeddings=128)
    cfg = dict(num_injected_layers=2, chunk_size=32, local_window=96, init=init)
    return SharedLLM(base, SharedLLMConfig(**{**cfg, **kwargs})).eval()


def ids_of(T, seed=0, batch=1):
    return torch.randint(0, 256, (batch, T), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_layout_and_no_information_from_later_tokens():
    model = make()
    assert model.context_len(96) == 0 and model.context_len(97) == 32 and model.context_len(300) == 224
    ids = ids_of(300)
    logits = model(ids).logits
    for t in (40, 150, 250):
        changed = ids.clone()
        changed[0, t] = (changed[0, t] + 1) % 256
        other = model(changed).logits
        torch.testing.assert_close(other[0, :t], logits[0, :t], atol=LOGITS_ATOL, rtol=0)
        assert (other[0, t:] - logits[0, t:]).abs().max() > LOGITS_CHANGED
    # a token that only reaches the last local part [224, 300) through the compressed context still moves its logits
    changed = ids.clone()
    changed[0, 20] = (changed[0, 20] + 1) % 256
    assert (model(changed).logits[0, 224:] - logits[0, 224:]).abs().max() > LOGITS_CHANGED


@torch.no_grad()
def test_reference_query_selection_in_forward_leaks_the_last_token():
    """Documented in SharedLLMConfig.lm_selection: the reference's walk, driven by the local part's last token."""
    model = make(lm_selection="query")
    ids = ids_of(300)
    logits = model(ids).logits[0, :299]
    moved = 0.0
    for value in range(10):
        changed = ids.clone()
        changed[0, 299] = value
        moved = max(moved, (model(changed).logits[0, :299] - logits).abs().max().item())
    assert moved > LOGITS_CHANGED


@torch.no_grad()
def test_injection_off_equals_base():
    model = make()
    ids = ids_of(90)
    base = model.base(input_ids=ids).logits
    torch.testing.assert_close(model(ids).logits, base, atol=LOGITS_ATOL, rtol=0)  # short text: no context at all
    torch.testing.assert_close(model.upper(ids, None).logits, base, atol=LOGITS_ATOL, rtol=0)
    context = model.compress(ids_of(64, seed=1)[0])
    assert (model.upper(ids, context).logits - base).abs().max() > LOGITS_CHANGED  # and on, it is not the base
    zero = make(init="zero")  # o_proj = 0: the injected model starts exactly as its base
    long = ids_of(300)
    torch.testing.assert_close(zero(long).logits[0, 224:], zero.base(input_ids=long[:, 224:]).logits[0],
                               atol=LOGITS_ATOL, rtol=0)


@pytest.mark.parametrize("leaf,path", [((24, 32), [0, 1]), ((56, 64), [1, 1]), ((40, 48), [1, 0])])
@torch.no_grad()
def test_query_aware_selection_finds_the_planted_key(leaf, path):
    """The key is planted as the last 8 tokens of a node at every level (the nodes are read at their last token, as
    in the reference code); the query ends with the key; the walk must expand the nodes that hold it."""
    model = make(chunk_size=64, local_window=128)
    chunk = ids_of(32, seed=3)[0].repeat(2)  # the same filler in both halves: only the key tells them apart
    key = torch.tensor([257, 11, 200, 7, 99, 180, 45, 3])
    chunk[leaf[0] : leaf[1]] = key
    query = torch.cat([ids_of(40, seed=4)[0], key])[None]
    spec = model.sharedllm_config.tree
    levels = split_tree(spec)
    walked = model.choose_paths([chunk], [levels], model._query_vector(query))[0]
    assert walked == path
    kept, _ = select_nodes(levels, walked)
    assert any((n.start, n.end) == leaf and n.level == spec.height for n in kept)  # kept at the finest level
    assert model.choose_paths([chunk], [levels], None) == [[1, 1]]  # language modelling always goes right


@torch.no_grad()
def test_generate_matches_forward_and_padding():
    model = make(selection="right")
    ids = ids_of(200, seed=5, batch=2)
    ids[1, :30] = 0
    mask = torch.ones_like(ids)
    mask[1, :30] = 0  # left padding, as the evaluation runner batches prompts
    out = model.generate(ids, attention_mask=mask, max_new_tokens=4, pad_token_id=0)
    assert out.shape == (2, 204) and torch.equal(out[:, :200], ids)
    for b in range(2):
        row = ids[b, mask[b].bool()][None]
        single = model.generate(row, max_new_tokens=4)
        assert torch.equal(single[0, row.shape[1] :], out[b, 200:])
        # greedy continuation == argmax of the teacher-forced forward on prompt + generated tokens
        full = torch.cat([row, single[:, row.shape[1] :]], dim=1)
        assert torch.equal(model(full).logits[0, row.shape[1] - 1 : -1].argmax(-1), single[0, row.shape[1] :])


@torch.no_grad()
def test_save_reload_identical(tmp_path):
    from transformers import AutoModelForCausalLM

    model = make()
    ids = ids_of(260, seed=6)
    save_sharedllm(model, tmp_path / "m")
    again = load_sharedllm(tmp_path / "m", dtype=torch.float32)
    assert again.sharedllm_config == model.sharedllm_config
    torch.testing.assert_close(again(ids).logits, model(ids).logits, atol=BITWISE, rtol=BITWISE)
    assert torch.equal(again.generate(ids, max_new_tokens=3), model.generate(ids, max_new_tokens=3))
    # an architecture, not a checkpoint: stock transformers cannot load the directory
    with pytest.raises((OSError, ValueError)):
        AutoModelForCausalLM.from_pretrained(tmp_path / "m", local_files_only=True)


def test_two_training_steps_change_only_what_trains():
    model = make(init="zero", split_noise=0.2).train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = set(model.trainable_parameter_names())
    assert trainable == {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(n.startswith("cross.") or n.startswith("base.model.layers.2.") for n in trainable)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    ids = ids_of(260, seed=7)
    for _ in range(2):  # o_proj starts at zero: q_proj and the norm get a gradient from the second step on
        loss = model(ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == trainable


@torch.no_grad()
def test_kl_term_is_an_option():
    ids = ids_of(260, seed=8)
    plain = make(init="zero")(ids, labels=ids).loss
    with_kl = make(init="zero", kl_coef=1.0)(ids, labels=ids).loss
    assert with_kl > plain  # the base with full attention reads tokens the local part does not


def test_bad_config_and_position_jumps_are_refused():
    with pytest.raises(ValueError, match="selection"):
        SharedLLMConfig(selection="left")
    with pytest.raises(ValueError, match="local_window"):
        make(local_window=512)  # beyond the base's 128 positions
    ids = ids_of(50)
    jumped = torch.cat([torch.arange(25), torch.arange(200, 225)])[None]
    with pytest.raises(ValueError, match="position_ids"):
        make()(ids, position_ids=jumped)
    make()(ids, position_ids=torch.arange(50)[None])  # the plain layout is accepted


def test_evaluation_suite_runs_it_unchanged(tmp_path):
    """`evaluate(model, tokenizer, ...)` and `endprompt eval --model <dir>` take a SharedLLM as any causal LM."""
    import numpy as np

    from endprompt.cli import main
    from endprompt.evaluate import evaluate
    from endprompt.tokenizer import byte_tokenizer

    model, tok = make(), byte_tokenizer()
    docs = [np.random.default_rng(i).integers(0, 256, 700) for i in range(2)]
    table = evaluate(model, tok, "passkey", [300], num_samples=2, style="compact", progress=False, model_name="s")
    for suite, extra in (("synthetic", {"tasks": ["niah_single_1"]}), ("needle", {"depths": (0.0, 1.0)}),
                         ("perplexity", {"ppl_docs": docs})):
        part = evaluate(model, tok, suite, [300], num_samples=1, style="compact", progress=False, **extra)
        table = part if table is None else __import__("pandas").concat([table, part], ignore_index=True)
    assert (table["status"] == "ok").all() and table["score"].notna().all()
    assert {"passkey", "niah_single_1", "needle", "perplexity"} <= set(table["task"])
    assert table[table["metric"] == "ppl_truncated"]["score"].iloc[0] > 1
    save_sharedllm(model, tmp_path / "m", tokenizer=tok)
    with pytest.raises(SystemExit) as done:
        main(["eval", "--model", str(tmp_path / "m"), "--suite", "passkey", "--lengths", "300", "--num-samples", "1",
              "--style", "compact", "--out", str(tmp_path / "res")])
    assert done.value.code == 0 and (tmp_path / "res" / "eval.csv").exists()


def test_gradient_checkpointing_is_refused_in_training():
    model = make().train()
    model.base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    with pytest.raises(ValueError, match="gradient checkpointing"):
        model(ids_of(20), labels=ids_of(20))
