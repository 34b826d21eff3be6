"""Shared fixtures: a tiny tokenizer and a tiny random Llama, both made here (nothing is downloaded)."""

import numpy as np
import pytest
import torch

from endprompt import rope as R

SPECIALS = ["<pad>", "<bos>", "<eos>", "<|eot_id|>"]
WORDS = ("this is the end of text , please pay attention here . end the pass key is remember it what "
         "a b c d e f g h i j k l m n o p q r s t u v w x y z 0 1 2 3 4 5 6 7 8 9").split()


def make_tokenizer(with_pad: bool = True, with_eot: bool = True):
    """A word-level PreTrainedTokenizerFast (lower-cased, punctuation split), like a real HF tokenizer."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    specials = [t for t in SPECIALS if with_eot or t != "<|eot_id|>"]
    vocab = {t: i for i, t in enumerate(specials + ["<unk>"] + sorted(set(WORDS)))}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    kwargs = {"bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>"}
    if with_pad:
        kwargs["pad_token"] = "<pad>"
    return PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)


@pytest.fixture(scope="session")
def study_workdir(tmp_path_factory):
    """A working directory shared by the study's tests (reproduce, the CLI), so that its ``cache/`` (the tokenized
    built-in corpus, the smoke base, the mixtures) is built once per session."""
    return tmp_path_factory.mktemp("study")


@pytest.fixture
def tokenizer():
    return make_tokenizer()


def tiny_llama(attn_implementation: str = "sdpa", vocab_size: int = 96, original_len: int = 32, target_len: int = 256,
               seed: int = 0):
    """A 2-layer random LlamaForCausalLM with linear PI from endprompt.rope, in eval mode, float32."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    rope = R.for_extension("linear", original_len, target_len, rope_theta=10000.0)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, attn_implementation=attn_implementation,
                         **R.transformers_config_kwargs(rope, target_len))
    return LlamaForCausalLM(config).eval()


def random_docs(n: int, lengths, vocab_size: int = 96, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = list(lengths) if not isinstance(lengths, int) else [lengths] * n
    return [rng.integers(4, vocab_size, size=length) for length in lengths]
