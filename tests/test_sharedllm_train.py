"""SharedLLM through `endprompt.train.train(cfg)`: recipe "sharedllm" with the `sharedllm` config section, exact resume,
final directory read by `load_sharedllm` and by the evaluation suite."""

import pytest
import torch

from endprompt.config import load_config
from endprompt.sharedllm import SharedLLM, load_sharedllm
from endprompt.train import train

SHARED = ["recipe.name=sharedllm", "recipe.target_len=224", "sharedllm.chunk_size=32", "sharedllm.local_window=128",
          "sharedllm.num_injected_layers=1", "sharedllm.init=normal", "sharedllm.split_noise=0.2"]


def config(out_dir, cache_dir, *overrides):
    return load_config("tiny-cpu", overrides=[
        f"run.out_dir={out_dir}", f"data.cache_dir={cache_dir}", "data.max_documents=40", "run.progress=false",
        "optim.micro_batch_size=2", "optim.max_steps=4", "optim.warmup_steps=1", "run.log_every=1",
        "optim.schedule=cosine", "run.save_every=2", "model.hidden_size=64", *SHARED, *overrides])


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("corpus-cache"))


def test_train_resume_and_reload(tmp_path, cache_dir):
    whole = train(config(tmp_path / "whole", cache_dir))
    assert whole.status == "completed" and len(whole.losses) == 4
    first = train(config(tmp_path / "split", cache_dir, "run.stop_after=2"))
    assert first.status == "stopped" and first.steps == 2
    second = train(config(tmp_path / "split", cache_dir))
    assert second.losses == whole.losses  # exact resume, split-point noise included
    a, b = load_sharedllm(whole.final_dir), load_sharedllm(second.final_dir)
    assert isinstance(a, SharedLLM) and a.sharedllm_config.chunk_size == 32
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    fresh = load_config("tiny-cpu", overrides=[*SHARED, "model.hidden_size=64"])
    from endprompt.modeling import prepare_model

    torch.manual_seed(0)
    start = prepare_model(fresh).model
    moved = {n for n, p in a.named_parameters() if not torch.equal(p, start.state_dict()[n])}
    assert moved and moved <= set(a.trainable_parameter_names())  # the compressor, embeddings and head are frozen


def test_bad_sharedllm_configs_are_refused():
    with pytest.raises(ValueError, match="local_window"):
        load_config("tiny-cpu", overrides=[*SHARED, "recipe.target_len=128"])  # no context chunks in training
    with pytest.raises(ValueError, match="original_len"):
        load_config("tiny-cpu", overrides=[*SHARED, "sharedllm.local_window=512", "recipe.target_len=1024"])
    with pytest.raises(ValueError, match="kl_coef"):
        load_config("tiny-cpu", overrides=[*SHARED, "sharedllm.kl_coef=2"])
    with pytest.raises(ValueError, match="lora_r"):
        load_config("tiny-cpu", overrides=[*SHARED, "model.lora_r=8"])
