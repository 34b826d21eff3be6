"""endprompt.inference_cost: one passkey prompt's prefill + answer, timed and measured per model and length, with a
saved SharedLLM and its base side by side (a tiny random model: the numbers are not the point, the table is)."""

import pytest

from endprompt.inference_cost import COLUMNS, inference_cost, load_model, measure_prompt, passkey_ids, summarize_cost
from endprompt.modeling import build_tiny_llama
from endprompt.sharedllm import SharedLLM, SharedLLMConfig, is_sharedllm_dir, save_sharedllm
from endprompt.tokenizer import byte_tokenizer

LENGTH = 192  # > the 64-token local window: the SharedLLM prompt has context chunks


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("cost")
    base = build_tiny_llama(seed=0, num_layers=2, hidden_size=32, num_heads=2, max_position_embeddings=64)
    base.save_pretrained(root / "base")
    shared = SharedLLM(build_tiny_llama(seed=0, num_layers=2, hidden_size=32, num_heads=2, max_position_embeddings=64),
                       SharedLLMConfig(num_injected_layers=1, chunk_size=16, height=2, beta=4.0, local_window=64,
                                       init="normal"))
    save_sharedllm(shared, root / "shared")
    return {"full": root / "base", "sharedllm": root / "shared"}


def test_measure_prompt_generates_the_whole_answer_for_both_kinds(saved):
    ids, budget = passkey_ids(LENGTH, byte_tokenizer(), seed=0)
    assert 0 < ids.shape[1] <= LENGTH - budget
    for path in saved.values():
        model = load_model(path)
        assert isinstance(model, SharedLLM) == is_sharedllm_dir(path)
        result = measure_prompt(model, ids, budget, repeats=2)
        assert result["new_tokens"] == budget and result["prompt_tokens"] == ids.shape[1]
        assert len(result["seconds"]) == 2 and min(result["seconds"]) > 0 and result["peak_memory_mib"] >= 0
    with pytest.raises(ValueError, match="repeats"):
        measure_prompt(model, ids, budget, repeats=0)


def test_the_stock_models_loop_is_greedy_decoding(saved):
    from endprompt.inference_cost import _generate

    model = load_model(saved["full"])
    ids, budget = passkey_ids(LENGTH, byte_tokenizer(), seed=1)
    ref = model.generate(ids, attention_mask=ids.new_ones(ids.shape), max_new_tokens=budget, min_new_tokens=budget,
                         do_sample=False, pad_token_id=0)
    assert _generate(model, ids, budget).tolist() == ref.tolist()


def test_inference_cost_table_side_by_side(saved):
    table = inference_cost(saved, [LENGTH], repeats=2, progress=False, isolate=False)
    assert list(table.columns) == COLUMNS and len(table) == 4
    assert list(table["method"]) == ["full", "full", "sharedllm", "sharedllm"]  # alternating at each length
    assert (table["seconds"] > 0).all() and (table["device"] == "cpu").all()
    summary = summarize_cost(table, "full")
    ref = summary[summary["method"] == "full"].iloc[0]
    assert ref["speedup_vs_reference"] == pytest.approx(1.0) and ref["repeats"] == 2
    assert ref["min_s"] <= ref["median_s"] <= ref["max_s"]
    other = summary[summary["method"] == "sharedllm"].iloc[0]
    full_median = table[table["method"] == "full"]["seconds"].median()
    assert other["speedup_vs_reference"] == pytest.approx(full_median / other["median_s"])
    with pytest.raises(ValueError, match="reference='pi'"):
        summarize_cost(table, "pi")


def test_each_measure_runs_in_a_process_of_its_own(saved):
    table = inference_cost({"sharedllm": saved["sharedllm"]}, [LENGTH], repeats=1, progress=False)
    assert len(table) == 1 and table["new_tokens"].iloc[0] == passkey_ids(LENGTH, byte_tokenizer())[1]
    assert table["peak_memory_mib"].iloc[0] >= 0 and table["threads"].iloc[0] >= 1


def test_inference_cost_refuses_bad_input(tmp_path, saved):
    with pytest.raises(FileNotFoundError, match="not a saved model"):
        inference_cost({"x": tmp_path}, [128])
    with pytest.raises(ValueError, match="at least one"):
        inference_cost({}, [128])
