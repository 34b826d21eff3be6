"""SharedLLM (arXiv 2603.04759) around a stock transformers Llama: two stacked models from one checkpoint.

- Lower model (compressor): the bottom ``M`` layers of the base, the *same modules* (frozen, so sharing them with the
  upper model's bottom layers is exact and costs no memory). Each kept node of each context chunk's tree
  (`endprompt.sharedllm.tree`) is encoded on its own (positions from 0); the keys (pre-RoPE) and values of its ``M``
  layers are downsampled to the kept tokens.
- Upper model: the whole base; its first ``M`` layers read the compressed context through cross-attention
  (`endprompt.sharedllm.injection`). Its self-attention spans only the *local* part of the text (at most
  ``local_window`` tokens, positions from 0), which is why a model trained short runs at any length.

Layout of a sequence of ``T`` tokens (``C`` = chunk size, ``W`` = local window): if ``T <= W`` the upper model alone;
otherwise the first ``n C`` tokens (``n = ceil((T - W) / C)``) are context chunks and the rest, ``W - C < len <= W``
tokens, is the local part. `SharedLLM.forward` gives logits for every token by applying the same rule to the prefix
that precedes each local part, so every logit depends only on earlier tokens (language-modelling selection goes right,
as in the paper, §3.2). `SharedLLM.generate` makes the query-aware selection once, from the prompt's last token, and
keeps the compressed context for every new token (greedy decoding, KV cache for the local part).

Trainable (paper §4.1): the cross-attention modules and the upper model's top ``N - M`` layers; the embeddings, the
bottom ``M`` layers (the compressor), the final norm and the LM head stay frozen. The reference code's KL term (a
distillation loss its language-modelling config sets to 2, not in the paper) is the option ``kl_coef`` (default 0):
``KL(p_base || p_sharedllm)`` with the base reading the whole sequence with full attention.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from endprompt.sharedllm.injection import CrossAttention, InjectedContext, Injector
from endprompt.sharedllm.tree import Node, TreeSpec, keep_indices, select_nodes, split_tree

__all__ = ["SharedLLMConfig", "SharedLLM", "SELECTIONS", "INITS", "MARKER", "FORMAT"]

SELECTIONS = ("query", "right")
INITS = ("zero", "copy", "normal", "none")
MARKER = "sharedllm.json"  # the file that marks a saved SharedLLM directory (see `endprompt.sharedllm.checkpoint`)
FORMAT = 1


@dataclass(frozen=True)
class SharedLLMConfig(TreeSpec):
    """SharedLLM's own settings (the base model keeps its transformers config): the context tree's fields
    (``chunk_size``, ``height``, ``beta``, ``split_noise``: `TreeSpec`, validated there) and these.

    Attributes:
        num_injected_layers: M, the compressor's depth and the number of injected layers; None = N / 8 rounded, at
            least 1 (the paper: M = 4 of Llama-2-7B's 32 layers).
        local_window: the upper model's self-attention span; None = 4 chunks. Must fit the base's positions.
        selection: how `generate` walks each tree: "query" (cosine to the prompt's last token) or "right".
        lm_selection: the same for `forward`: "right" (the paper's language modelling; strictly causal) or "query"
            (the reference code: the local part's last token picks the path, which lets up to ``height - 1`` bits
            per chunk about later tokens reach earlier logits).
        init: cross-attention start: "zero" (norm and q_proj copied from the layer's self-attention, o_proj zero: the
            model starts exactly as the base), "copy" (o_proj copied too), "normal" (the base's initializer),
            "none" (leave as constructed; used when loading).
        kl_coef: weight of the optional KL term in `SharedLLM.forward`'s loss (0 = the paper's plain LM loss).
    """

    num_injected_layers: int | None = None
    local_window: int | None = None
    selection: str = "query"
    lm_selection: str = "right"
    init: str = "zero"
    kl_coef: float = 0.0

    def __post_init__(self):
        super().__post_init__()  # the tree's fields
        if self.selection not in SELECTIONS or self.lm_selection not in SELECTIONS:
            raise ValueError(f"selection={self.selection!r}, lm_selection={self.lm_selection!r}: each must be one of "
                             f"{SELECTIONS}")
        if self.init not in INITS:
            raise ValueError(f"init={self.init!r}; choose one of {INITS}")
        if self.num_injected_layers is not None and self.num_injected_layers < 1:
            raise ValueError(f"num_injected_layers={self.num_injected_layers} must be >= 1")
        if self.local_window is not None and self.local_window < self.chunk_size:
            raise ValueError(f"local_window={self.local_window} < chunk_size={self.chunk_size}: the local part must "
                             "hold at least one chunk's worth of tokens")
        if self.kl_coef < 0:
            raise ValueError(f"kl_coef={self.kl_coef} must be >= 0")

    @property
    def tree(self) -> TreeSpec:
        return TreeSpec(self.chunk_size, self.height, self.beta, self.split_noise)

    @property
    def window(self) -> int:
        return self.local_window or 4 * self.chunk_size

    def to_dict(self) -> dict:
        return asdict(self)


class SharedLLM(nn.Module):
    """A stock ``LlamaForCausalLM`` (``base``) made into SharedLLM; see the module docstring.

    The evaluation suite uses it as any causal LM: ``model(input_ids, attention_mask).logits``, ``model.generate(...)``
    (greedy), ``model.parameters()``, ``model.eval()``."""

    def __init__(self, base, config: SharedLLMConfig | None = None):
        super().__init__()
        config = config or SharedLLMConfig()
        n_layers = base.config.num_hidden_layers
        M = config.num_injected_layers or max(1, round(n_layers / 8))
        if M > n_layers:
            raise ValueError(f"num_injected_layers={M} > the base's {n_layers} layers")
        if config.window > base.config.max_position_embeddings:
            raise ValueError(f"local_window={config.window} exceeds the base's max_position_embeddings="
                             f"{base.config.max_position_embeddings}; lower local_window (or chunk_size)")
        config = replace(config, num_injected_layers=M)
        self.base = base
        self.sharedllm_config = config
        rotary = base.model.rotary_emb
        ref = next(base.parameters())
        self.cross = nn.ModuleList([CrossAttention(base.config, rotary) for _ in range(M)]).to(ref.device, ref.dtype)
        self._init_cross(config.init)
        self.injector = Injector(base.model.layers, self.cross)
        self._cache_kwarg = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
        self.set_trainable()

    @property
    def config(self):
        """The base's transformers config (what tools read for vocabulary size, positions, tokens)."""
        return self.base.config

    @property
    def num_injected_layers(self) -> int:
        return self.sharedllm_config.num_injected_layers

    def _init_cross(self, mode: str) -> None:
        if mode in ("none", "normal"):
            if mode == "normal":
                self.cross.apply(self.base._init_weights)
            return
        with torch.no_grad():
            for x, layer in zip(self.cross, self.base.model.layers):
                x.norm.weight.copy_(layer.input_layernorm.weight)
                x.q_proj.weight.copy_(layer.self_attn.q_proj.weight)
                if mode == "copy":
                    x.o_proj.weight.copy_(layer.self_attn.o_proj.weight)
                else:
                    x.o_proj.weight.zero_()

    def save_pretrained(self, path, state_dict: dict | None = None, **unused) -> None:
        """Write the directory `endprompt.sharedllm.checkpoint.load_sharedllm` reads (``state_dict``: a full state
        dict gathered from distributed ranks, loaded first). Named as transformers' method so that code that saves a
        trained model with ``model.save_pretrained(dir)`` saves this one too; stock ``from_pretrained`` cannot read
        the result."""
        import json
        from pathlib import Path

        from safetensors.torch import save_file

        if state_dict is not None:
            self.load_state_dict(state_dict)
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        self.base.save_pretrained(out / "base")
        save_file({k: v.detach().contiguous().cpu() for k, v in self.cross.state_dict().items()},
                  str(out / "cross_attention.safetensors"))
        meta = {"architecture": "SharedLLM", "format": FORMAT, "config": self.sharedllm_config.to_dict()}
        (out / MARKER).write_text(json.dumps(meta, indent=1))

    def trainable_parameter_names(self) -> list[str]:
        """The cross-attention modules and the upper model's layers M..N-1 (paper §4.1)."""
        M = self.num_injected_layers
        return [n for n, _ in self.named_parameters()
                if n.startswith("cross.") or any(n.startswith(f"base.model.layers.{i}.")
                                                 for i in range(M, self.base.config.num_hidden_layers))]

    def set_trainable(self) -> None:
        names = set(self.trainable_parameter_names())
        for n, p in self.named_parameters():
            p.requires_grad_(n in names)

    # -- the lower model ------------------------------------------------------------------------------------------

    def _run_layers(self, ids: torch.Tensor, depth: int, capture: bool):
        """Embed ``ids`` ``(G, L)`` (positions 0..L-1) and run the base's first ``depth`` layers. Returns the final
        hidden states ``(G, L, hidden)`` and, if ``capture``, each layer's pre-RoPE keys and values
        ``(G, H_kv, L, D)``."""
        from transformers.masking_utils import create_causal_mask

        body = self.base.model
        h = body.embed_tokens(ids)
        pos = torch.arange(ids.shape[1], device=ids.device)[None].expand(ids.shape[0], -1)
        mask = create_causal_mask(body.config, h, torch.ones_like(ids), None, pos)
        pe = body.rotary_emb(h, pos)
        captured, handles = [], []
        if capture:
            head_dim = self.cross[0].head_dim
            for layer in body.layers[:depth]:
                slot: dict = {}
                captured.append(slot)
                for name in ("k", "v"):
                    proj = getattr(layer.self_attn, f"{name}_proj")
                    handles.append(proj.register_forward_hook(
                        lambda m, i, o, slot=slot, name=name: slot.__setitem__(
                            name, o.view(*o.shape[:2], -1, head_dim).transpose(1, 2))))
        try:
            for layer in body.layers[:depth]:
                h = layer(h, attention_mask=mask, position_ids=pos, position_embeddings=pe)
                h = h[0] if isinstance(h, tuple) else h
        finally:
            for handle in handles:
                handle.remove()
        return h, [s["k"] for s in captured], [s["v"] for s in captured]

    def _representation(self, ids: torch.Tensor) -> torch.Tensor:
        """The retrieval vector of each row of ``ids`` ``(G, L)``: the first layer's normed output at the last token
        (the reference code's choice, for nodes and queries alike)."""
        h, _, _ = self._run_layers(ids, 1, capture=False)
        return self.base.model.norm(h[:, -1])  # (G, hidden)

    def _batched(self, fn, seqs: list[torch.Tensor]) -> list:
        """``fn`` on the 1-D token runs ``seqs``, stacked into one batch per length; returns per-run results, each a
        slice ``[g : g + 1]`` of ``fn``'s batched outputs (a tensor or a list of tensors)."""
        groups: dict[int, list[int]] = {}
        for i, s in enumerate(seqs):
            groups.setdefault(s.numel(), []).append(i)
        out: list = [None] * len(seqs)
        for members in groups.values():
            res = fn(torch.stack([seqs[i] for i in members]))  # (G, length) in
            for g, i in enumerate(members):
                out[i] = res[g : g + 1] if torch.is_tensor(res) else [r[g : g + 1] for r in res]
        return out

    def choose_paths(self, chunks: list[torch.Tensor], trees: list[list[list[Node]]],
                     query: torch.Tensor | None) -> list[list[int]]:
        """The depth-first walk of every chunk's tree (``trees[j]`` from `split_tree` over ``chunks[j]``), batched
        level by level: the two children of each chunk's current node are read (`_representation`) and the one
        with the higher cosine similarity to ``query`` ``(hidden,)`` is expanded (ties: left). None: always right."""
        height = len(trees[0]) - 1
        if query is None:
            return [[1] * (height - 1) for _ in trees]
        current = [tree[0][0] for tree in trees]
        paths: list[list[int]] = [[] for _ in trees]
        for w in range(1, height):
            pairs = [[n for n in tree[w] if n.start >= cur.start and n.end <= cur.end]
                     for tree, cur in zip(trees, current)]
            reps = self._batched(self._representation,
                                 [chunks[j][n.start : n.end] for j, pair in enumerate(pairs) for n in pair])
            for j, pair in enumerate(pairs):
                sims = F.cosine_similarity(torch.cat(reps[2 * j : 2 * j + 2]), query[None], dim=-1, eps=1e-6)  # (2,)
                pick = int(sims.argmax())
                paths[j].append(pick)
                current[j] = pair[pick]
        return paths

    @torch.no_grad()
    def compress(self, context_ids: torch.Tensor, query: torch.Tensor | None = None, training: bool = False,
                 memo: dict | None = None) -> InjectedContext:
        """Compress ``context_ids`` ``(n C,)`` into the injected keys/values. ``query`` ``(hidden,)`` picks each
        tree's path (None: always right); ``training`` draws noisy split points; ``memo`` (a dict kept across calls
        on prefixes of the same text) reuses the chunks already compressed with a query-free walk."""
        spec = self.sharedllm_config.tree
        C = spec.chunk_size
        if context_ids.ndim != 1 or context_ids.numel() % C or context_ids.numel() == 0:
            raise ValueError(f"context of shape {tuple(context_ids.shape)}: need a 1-D run of whole {C}-token chunks")
        n = context_ids.numel() // C
        reuse = memo if memo is not None and query is None else {}
        todo = [j for j in range(n) if j not in reuse]
        if todo:
            chunks = [context_ids[j * C : (j + 1) * C] for j in todo]
            # training split points come from torch's global generator, which checkpoints save and restore
            rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,)))) if training else None
            trees = [split_tree(spec, rng=rng) for _ in todo]
            paths = self.choose_paths(chunks, trees, query)
            layouts = []
            for tree, path in zip(trees, paths):
                kept, _ = select_nodes(tree, path)
                layouts.append([(node, keep_indices(node, spec)) for node in kept])
            # every kept node is encoded on its own (positions from 0), batched by size; its kept tokens are gathered
            runs = [chunk[node.start : node.end] for chunk, layout in zip(chunks, layouts) for node, _ in layout]
            M = self.num_injected_layers
            encoded = iter(self._batched(lambda ids: sum(self._run_layers(ids, M, True)[1:], []), runs))
            for j, layout in zip(todo, layouts):
                keys, values, count = [], [], 0
                for node, idx in layout:
                    kv = next(encoded)  # M keys then M values, each (1, H_kv, size, D)
                    k, v = kv[:M], kv[M:]
                    sel = torch.as_tensor(idx - node.start, device=context_ids.device)
                    keys.append([x[:, :, sel] for x in k])  # per layer (1, H_kv, kept, D)
                    values.append([x[:, :, sel] for x in v])
                    count += len(idx)
                reuse[j] = ([torch.cat(layer, dim=2) for layer in zip(*keys)],
                            [torch.cat(layer, dim=2) for layer in zip(*values)], count)
        M = self.num_injected_layers
        keys = [torch.cat([reuse[j][0][m] for j in range(n)], dim=2) for m in range(M)]  # (1, H_kv, Lc, D)
        values = [torch.cat([reuse[j][1][m] for j in range(n)], dim=2) for m in range(M)]
        chunk_ids = torch.cat([torch.full((reuse[j][2],), j, dtype=torch.long) for j in range(n)])
        return InjectedContext(keys, values, chunk_ids.to(context_ids.device), n)

    # -- the upper model ------------------------------------------------------------------------------------------

    def context_len(self, length: int) -> int:
        """How many leading tokens of a ``length``-token text are context chunks (the rest is the local part)."""
        C, W = self.sharedllm_config.chunk_size, self.sharedllm_config.window
        return 0 if length <= W else math.ceil((length - W) / C) * C

    def upper(self, ids: torch.Tensor, context: InjectedContext | None, cache=None):
        """The base on ``ids`` ``(1, T)`` with ``context`` injected (None: exactly the base)."""
        self.injector.set(context)
        try:
            kwargs = {self._cache_kwarg: cache} if cache is not None else {}
            return self.base(input_ids=ids, use_cache=cache is not None, **kwargs)
        finally:
            self.injector.set(None)

    def _row_logits(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits ``(T, V)`` of one unpadded sequence ``(T,)``, each from the tokens before it (module docstring)."""
        pieces, end, memo = [], ids.numel(), {}
        query_aware = self.sharedllm_config.lm_selection == "query"
        while end > 0:
            ctx = self.context_len(end)
            local = ids[ctx:end][None]
            context = None
            if ctx:
                query = self._query_vector(local) if query_aware else None
                context = self.compress(ids[:ctx], query, training=self.training, memo=memo)
            pieces.append(self.upper(local, context).logits[0])
            end = ctx
        return torch.cat(pieces[::-1])

    @torch.no_grad()
    def _query_vector(self, local: torch.Tensor) -> torch.Tensor:
        return self._representation(local)[0]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **unused):
        """Logits for every position ``(B, T, V)`` (zeros at padding) and, with ``labels``, the mean next-token loss
        over labels != -100, plus ``kl_coef`` x KL(base with full attention || SharedLLM) when set."""
        from transformers.modeling_outputs import CausalLMOutputWithPast

        if unused.get("use_cache"):
            raise ValueError("SharedLLM.forward does not return a cache; use SharedLLM.generate for decoding")
        checkpointing = [getattr(layer, "gradient_checkpointing", False) for layer in self.base.model.layers]
        if self.training and any(checkpointing):
            raise ValueError("gradient checkpointing recomputes the injected layers after the context is removed; "
                             "turn it off for SharedLLM (model.gradient_checkpointing=false)")
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        B, T = input_ids.shape
        position_ids = unused.get("position_ids")
        if position_ids is not None and not torch.equal(position_ids * mask, ((mask.cumsum(-1) - 1) * mask)):
            raise ValueError("SharedLLM sets its own positions (each local part from 0, chunk-level ids for the "
                             "context); position_ids other than 0..n-1 per row (recipes with position jumps) are not "
                             "supported: train it with the plain layout")
        logits = None
        for b in range(B):
            keep = mask[b].bool()
            idx = keep.nonzero()[:, 0]
            if idx.numel() and int(idx[-1] - idx[0] + 1) != idx.numel():
                raise ValueError("attention_mask must mark one contiguous run of tokens per row (left or right "
                                 "padding); SharedLLM does not take packed rows")
            row = self._row_logits(input_ids[b, keep]) if idx.numel() else None
            if logits is None:
                vocab = row.shape[-1] if row is not None else self.base.config.vocab_size
                logits = input_ids.new_zeros((B, T, vocab), dtype=next(self.base.parameters()).dtype)
            if row is not None:
                logits[b, keep] = row.to(logits.dtype)
        loss = None
        if labels is not None:
            target = labels[:, 1:].masked_fill(~mask[:, 1:].bool(), -100)
            loss = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), target.flatten(), ignore_index=-100)
            if self.sharedllm_config.kl_coef > 0:
                loss = loss + self.sharedllm_config.kl_coef * self._kl(input_ids, mask, logits)
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    def _kl(self, input_ids, mask, logits) -> torch.Tensor:
        with torch.no_grad():
            teacher = self.base(input_ids=input_ids, attention_mask=mask).logits.float()  # injection off
        valid = mask.bool()
        p_log = F.log_softmax(teacher[valid], -1)
        q_log = F.log_softmax(logits[valid].float(), -1)
        return F.kl_div(q_log, p_log, log_target=True, reduction="batchmean")

    # -- generation -----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def prefill(self, ids: torch.Tensor):
        """Compress the context of one prompt ``(T,)`` (query-aware when ``selection == "query"``) and run the upper
        model on its local part; returns the last logits ``(V,)``, the context and the local KV cache."""
        from transformers import DynamicCache

        ctx = self.context_len(ids.numel())
        local = ids[ctx:][None]
        context = None
        if ctx:
            query = self._query_vector(local) if self.sharedllm_config.selection == "query" else None
            context = self.compress(ids[:ctx], query)
        cache = DynamicCache(config=self.base.config)
        out = self.upper(local, context, cache)
        return out.logits[0, -1], context, cache

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, max_new_tokens: int = 20,
                 do_sample: bool = False, pad_token_id: int | None = None, eos_token_id=None, **unused):
        """Greedy decoding as ``transformers``' ``generate``: returns ``(B, T + new)``, the prompt as given (padding
        included) then the new tokens, ``pad_token_id`` after a row's end of sequence. The compressed context of each
        prompt is computed once and kept; the local part grows with a KV cache."""
        if do_sample:
            raise ValueError("SharedLLM.generate is greedy only: pass do_sample=False")
        eos = set() if eos_token_id is None else set([eos_token_id] if isinstance(eos_token_id, int) else eos_token_id)
        pad = pad_token_id if pad_token_id is not None else (min(eos) if eos else 0)
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        rows = []
        for b in range(input_ids.shape[0]):
            ids = input_ids[b, mask[b].bool()]
            logits, context, cache = self.prefill(ids)
            new = []
            for _ in range(max_new_tokens):
                token = int(logits.argmax())
                new.append(token)
                if token in eos or len(new) == max_new_tokens:
                    break
                step = torch.tensor([[token]], device=ids.device)
                logits = self.upper(step, context, cache).logits[0, -1]
            rows.append(new)
        width = max(len(r) for r in rows) if rows else 0
        tail = torch.full((input_ids.shape[0], width), pad, dtype=input_ids.dtype, device=input_ids.device)
        for b, r in enumerate(rows):
            tail[b, : len(r)] = torch.tensor(r, dtype=input_ids.dtype)
        return torch.cat([input_ids, tail], dim=1)
