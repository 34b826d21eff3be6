"""Recipes: which tokens of a document go into a training sample and which position ids they get, one recipe per
context-extension method (the layouts of `endprompt.positions`). `endprompt.batching` pads or packs the samples into
batches.

Recipes live in a registry, `RECIPES` (name -> `RecipeSpec`), in the style of `endprompt.rope`: every part of the
library (sample building, corpus slicing, mixture document length, training, the study) asks the spec, never the name,
so a new recipe is one `register_recipe` call. Built in (``a`` body tokens, ``b`` terminal tokens, ``L`` =
``target_len``):

- ``endprompt``         paper variant (Eq. 4-5): ``doc[:a]`` + an end prompt drawn from the cue set, placed on
  ``[L-b', L-1]`` (``b'`` its token count, at most ``b``); prompt tokens get loss weight ``prompt_weight`` (Eq. 11).
- ``endprompt-tail``    the authors' scripts: window ``doc[:a+b]``; its own last ``b`` tokens go on ``[L-b, L-1]``.
- ``endprompt-random``  the authors' random variant: ``doc[:a]`` + the document's last ``b`` tokens, placed at
  ``t ~ U[a, L-b]``.
- ``endprompt-pose``    ET(PoSE), our definition: a PoSE-chunked body of ``a`` tokens + end prompt on ``[L-b', L-1]``.
- ``pose``              PoSE: window ``w`` (default ``a+b``) in ``num_chunks`` chunks, content and positions skipped.
- ``full``              contiguous window ``w`` (default ``L``): full-length fine-tuning, or pretraining at ``w = L0``.
- ``longlora``          ``full``'s samples; `endprompt.train` adds LoRA+ and S2-Attn (LongLoRA).
- ``pretrain``          ``full``'s samples at the model's own length (``L = L0``), no RoPE scaling: base models.
- ``sharedllm``         ``full``'s samples at ``L`` (e.g. L0 + a few context chunks), no RoPE scaling: trains
                        `endprompt.sharedllm` (the ``sharedllm`` config section), whose upper model sees at most
                        its local window and the rest as compressed context.

The jump target. In the recipes with a terminal segment, the first terminal token is predicted from the last body
token across the position jump (``a-1`` to ``L-b``): its loss weight is ``prompt_weight`` for the cue recipes and 1
for own-tail and random, where ``doc[-b]`` does not even follow ``doc[a-1]`` in the text. PoSE keeps the same kind of
target across its chunk jumps, so it is kept by default; ``Recipe(jump_target=False)`` gives it weight 0.

Short documents (rule ``short_docs``): ``"shrink"`` (default) keeps the layout but with fewer body tokens -- the
terminal segment still ends at ``L-1`` -- and counts the sample in ``stats["shrunk"]``; documents below the recipe's
hard minimum (`min_doc_len`) are skipped and counted in ``stats["skipped"]``. ``"skip"`` skips every document shorter
than the full sample (`full_doc_len`); ``"error"`` raises on them. Counts live in ``Collator.stats``.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from endprompt import positions as P

__all__ = [
    "RECIPES",
    "RecipeSpec",
    "register_recipe",
    "recipe_spec",
    "EOT_CUE",
    "DEFAULT_CUES",
    "SHORT_DOC_RULES",
    "Recipe",
    "Sample",
    "build_sample",
    "recipe_position_ids",
    "min_doc_len",
    "full_doc_len",
    "sample_len",
    "tokenize_cues",
]

SHORT_DOC_RULES = ("shrink", "skip", "error")

EOT_CUE = "<eot>"
"""Cue placeholder for the model's own end-of-turn token (the paper's EP_2, ``<|eot_id|>`` for Llama-3)."""

DEFAULT_CUES = ("This is the end of text, please pay attention here", EOT_CUE, "End.")
"""The paper's cue set E (§3, EP_1..EP_3)."""

_EOT_TOKENS = ("<|eot_id|>", "<|im_end|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")

Cut = Callable[[np.ndarray, "Recipe", np.random.Generator, "np.ndarray | None"],
               tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class RecipeSpec:
    """Everything the library needs to know about one recipe (`register_recipe` adds one).

    Attributes:
        cut: ``(doc, recipe, rng, prompt) -> (body, tail, position_ids)``: the body tokens, the terminal tokens (empty
            for recipes without a terminal segment) and the position ids of one sample. ``doc`` may be shorter than
            ``full_doc_len`` (the "shrink" rule): ``cut`` then keeps the layout with fewer body tokens. ``prompt`` is
            the drawn end prompt for a recipe that ``uses_cues``, else None.
        physical_len: ``recipe -> int``, the longest sample (tokens per sequence, what a token budget counts).
        full_doc_len: ``recipe -> int``, document tokens a full-size sample consumes; shorter documents are "short",
            and mixture documents are this long.
        sample_len: ``recipe -> int``, document tokens one sample draws on in a concatenated corpus (more than
            ``full_doc_len`` where the recipe skips content or keeps the document's real end).
        min_doc_len: ``recipe -> int``, the shortest document the recipe can use at all.
        check: ``recipe -> None``, raises ValueError on lengths the layout cannot place (run by `Recipe`).
        uses_cues: the terminal segment is an end prompt drawn from ``recipe.cues``, weighted ``prompt_weight``.
        layout: ``(recipe, rng) -> position ids`` of one full-size sample; None = ``cut`` of a full-size document.
        extends_positions: the run extends the base's RoPE to ``target_len`` (False: the base keeps its own positions
            and context, e.g. plain pretraining or SharedLLM's local window).
        s2_attention: train with LongLoRA's shifted sparse attention (`endprompt.s2attn`); batches are padded to a
            multiple of 8 and the saved model is set back to full (sdpa) attention.
        default_lora_r: LoRA rank when ``model.lora_r`` is unset (0 = full fine-tuning).
        sharedllm: the base becomes the lower and upper model of `endprompt.sharedllm.SharedLLM`.
    """

    cut: Cut
    physical_len: Callable[[Recipe], int]
    full_doc_len: Callable[[Recipe], int]
    sample_len: Callable[[Recipe], int]
    min_doc_len: Callable[[Recipe], int] = lambda r: 1
    check: Callable[[Recipe], None] = lambda r: None
    uses_cues: bool = False
    layout: Callable[[Recipe, np.random.Generator], np.ndarray] | None = None
    extends_positions: bool = True
    s2_attention: bool = False
    default_lora_r: int = 0
    sharedllm: bool = False


RECIPES: dict[str, RecipeSpec] = {}
"""The recipe registry: name -> `RecipeSpec`. Add to it with `register_recipe`."""


def register_recipe(name: str, spec: RecipeSpec) -> RecipeSpec:
    """Register (or replace) the recipe ``name``; `Recipe`, the collator, the data pipeline and training then accept
    it. Returns ``spec``."""
    if not isinstance(spec, RecipeSpec):
        raise TypeError(f"register_recipe({name!r}, ...) needs a RecipeSpec, got {type(spec).__name__}")
    RECIPES[name] = spec
    return spec


def recipe_spec(name: str) -> RecipeSpec:
    """The spec of the recipe ``name``; raises naming the registered recipes."""
    if name not in RECIPES:
        raise ValueError(f"recipe.name={name!r} is not valid; choose one of: {', '.join(RECIPES)} "
                         "(or register one with endprompt.recipe.register_recipe)")
    return RECIPES[name]


@dataclass(frozen=True)
class Recipe:
    """How a training sample is cut from a document and placed.

    Attributes:
        name: a key of `RECIPES`.
        a: body (segment-1) tokens per sample.
        b: terminal-segment tokens (tail recipes), or the largest end prompt allowed (cue recipes).
        target_len: the context length to extend to (``L``); the terminal segment ends at ``L-1``.
        window: physical length for ``pose`` (default ``a+b``, matching EndPrompt) and ``full`` (default ``L``).
        cues: the end-prompt cue set of the cue recipes; `EOT_CUE` means the end-of-turn token.
        prompt_weight: loss weight of end-prompt tokens (Eq. 11: smaller than the text's 1, non-zero). The paper gives
            no value; 0.1 keeps the prompt from dominating while still training the model to read it.
        num_chunks: chunks for ``pose`` and the body of ``endprompt-pose``.
        short_docs: rule for documents shorter than a full sample: "shrink", "skip" or "error" (module docstring).
        jump_target: keep the first terminal token as a training target (predicted from the last body token across the
            position jump; module docstring). False gives it weight 0. No effect on recipes without a terminal segment.
    """

    name: str = "endprompt"
    a: int = 8192
    b: int = 20
    target_len: int = 65536
    window: int | None = None
    cues: tuple[str, ...] = DEFAULT_CUES
    prompt_weight: float = 0.1
    num_chunks: int = 2
    short_docs: str = "shrink"
    jump_target: bool = True

    def __post_init__(self):
        spec = recipe_spec(self.name)
        if self.short_docs not in SHORT_DOC_RULES:
            raise ValueError(f"short_docs={self.short_docs!r} must be one of {SHORT_DOC_RULES}")
        object.__setattr__(self, "cues", tuple(self.cues))
        if spec.uses_cues and not self.cues:
            raise ValueError(f"recipe {self.name!r} needs a non-empty cue set (e.g. endprompt.recipe.DEFAULT_CUES)")
        if not 0 < self.prompt_weight <= 1:
            raise ValueError(f"prompt_weight must be in (0, 1] (Eq. 11: smaller, non-zero), got {self.prompt_weight}")
        if self.num_chunks < 1:
            raise ValueError(f"num_chunks must be >= 1, got {self.num_chunks}")
        try:
            spec.check(self)
        except ValueError as err:
            raise ValueError(f"recipe {self.name!r}: {err}") from None

    @property
    def spec(self) -> RecipeSpec:
        return RECIPES[self.name]

    @property
    def physical_len(self) -> int:
        """Longest sample this recipe makes."""
        return self.spec.physical_len(self)

    def replace(self, **changes) -> Recipe:
        return dataclasses.replace(self, **changes)


@dataclass
class Sample:
    """One training sample before padding; all arrays have shape ``(n,)``.

    ``loss_weights[l]`` weighs the prediction of token ``l`` (from tokens ``< l``); ``segment_ids`` is 1 on the body and
    2 on the terminal segment (0 is left for padding).
    """

    input_ids: np.ndarray
    position_ids: np.ndarray
    loss_weights: np.ndarray
    segment_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.input_ids)


def min_doc_len(recipe: Recipe) -> int:
    """The shortest document the recipe can use at all (the "shrink" rule skips documents below it)."""
    return recipe.spec.min_doc_len(recipe)


def full_doc_len(recipe: Recipe) -> int:
    """Document tokens a full-size sample consumes (shorter documents are "short"; mixture documents are this long)."""
    return recipe.spec.full_doc_len(recipe)


def sample_len(recipe: Recipe) -> int:
    """Document tokens one sample draws on in a concatenated corpus (`endprompt.data.SampleSource`)."""
    return recipe.spec.sample_len(recipe)


def recipe_position_ids(recipe: Recipe, rng: P.RngLike = None) -> np.ndarray:
    """The position ids of one full-size sample of ``recipe`` (a ``b``-token end prompt for the cue recipes)."""
    spec, gen = recipe.spec, P.as_generator(rng)
    if spec.layout is not None:
        return spec.layout(recipe, gen)
    prompt = np.zeros(recipe.b, dtype=np.int64) if spec.uses_cues else None
    return spec.cut(np.arange(spec.sample_len(recipe), dtype=np.int64), recipe, gen, prompt)[2]


def tokenize_cues(cues: Sequence[str], tokenizer, max_len: int | None = None) -> list[np.ndarray]:
    """Token ids of each cue with ``tokenizer`` (no special tokens added); `EOT_CUE` becomes the end-of-turn token.

    Raises on an empty cue set, a cue that tokenizes to nothing, or one longer than ``max_len`` tokens.
    """
    if not cues:
        raise ValueError("the cue set is empty; give at least one end prompt (e.g. endprompt.recipe.DEFAULT_CUES)")
    out = []
    for cue in cues:
        if cue == EOT_CUE:
            ids = [_eot_token_id(tokenizer)]
        else:
            ids = tokenizer.encode(cue, add_special_tokens=False)
        if len(ids) == 0:
            raise ValueError(f"end prompt {cue!r} tokenizes to no tokens")
        if max_len is not None and len(ids) > max_len:
            raise ValueError(
                f"end prompt {cue!r} is {len(ids)} tokens, longer than the allowed b={max_len}; "
                f"raise Recipe.b to >= {len(ids)} or shorten the cue"
            )
        out.append(np.asarray(ids, dtype=np.int64))
    return out


def _eot_token_id(tokenizer) -> int:
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    for token in _EOT_TOKENS:
        if token in vocab:
            return int(vocab[token])
    if getattr(tokenizer, "eos_token_id", None) is not None:
        return int(tokenizer.eos_token_id)
    raise ValueError(f"tokenizer has no end-of-turn token ({', '.join(_EOT_TOKENS)}) and no eos_token; "
                     f"drop {EOT_CUE!r} from the cue set")


def _pose_body(doc: np.ndarray, chunk_lens: list[int], span: int, rng: np.random.Generator) -> np.ndarray:
    # PoSE's content rule: chunk 1 = doc[0:r1], later chunks are later contiguous spans of the doc within its first
    # `span` tokens; their text offsets are drawn like the position skips (independently of them, as in PoSE's code).
    offsets = P.pose_skips(len(chunk_lens), span - sum(chunk_lens), rng)
    idx = np.arange(sum(chunk_lens)) + np.repeat(offsets, chunk_lens)
    return doc[idx]


# --- the built-in recipes --------------------------------------------------------------------------------------------


def _cut_endprompt(doc, r, gen, prompt):
    body = doc[: r.a]
    return body, prompt, P.endprompt_position_ids(len(body), len(prompt), r.target_len)


def _cut_tail(doc, r, gen, prompt):
    window = doc[: r.a + r.b]
    return window[: -r.b], window[-r.b :], P.endprompt_position_ids(len(window) - r.b, r.b, r.target_len)


def _cut_random(doc, r, gen, prompt):
    body = doc[: min(r.a, len(doc) - r.b)]
    return body, doc[-r.b :], P.random_endprompt_position_ids(len(body), r.b, r.target_len, gen)


def _cut_endprompt_pose(doc, r, gen, prompt):
    a = min(r.a, len(doc))
    chunks = P.pose_chunk_lengths(a, min(r.num_chunks, a), gen)
    body = _pose_body(doc, chunks, min(len(doc), r.target_len - len(prompt)), gen)
    return body, prompt, P.endprompt_pose_position_ids(chunks, len(prompt), r.target_len, gen)


def _cut_pose(doc, r, gen, prompt):
    w = min(r.physical_len, len(doc))
    chunks = P.pose_chunk_lengths(w, min(r.num_chunks, w), gen)
    body = _pose_body(doc, chunks, min(len(doc), r.target_len), gen)
    return body, doc[:0], P.pose_position_ids(chunks, r.target_len, gen)


def _cut_full(doc, r, gen, prompt):
    body = doc[: r.physical_len]
    return body, doc[:0], P.full_position_ids(len(body))


def _check_terminal(r: Recipe) -> None:
    P.endprompt_position_ids(r.a, r.b, r.target_len)  # validates a, b and target_len > a + b


def _check_full(r: Recipe) -> None:
    if r.physical_len > r.target_len:
        raise ValueError(f"window={r.physical_len} exceeds target_len={r.target_len}")


def _check_pose(r: Recipe) -> None:
    if r.physical_len >= r.target_len:
        raise ValueError(f"target_len={r.target_len} must exceed the PoSE window {r.physical_len}; raise target_len")


def _a_plus_b(r: Recipe) -> int:
    return r.a + r.b


_CUE_SPEC = dict(physical_len=_a_plus_b, full_doc_len=lambda r: r.a, check=_check_terminal, uses_cues=True)
_FULL = RecipeSpec(cut=_cut_full, physical_len=lambda r: r.window or r.target_len,
                   full_doc_len=lambda r: r.physical_len, sample_len=lambda r: r.physical_len, check=_check_full)
register_recipe("endprompt", RecipeSpec(cut=_cut_endprompt, sample_len=lambda r: r.a, **_CUE_SPEC))
register_recipe("endprompt-tail", RecipeSpec(cut=_cut_tail, physical_len=_a_plus_b, full_doc_len=_a_plus_b,
                                             sample_len=_a_plus_b, min_doc_len=lambda r: r.b + 1,
                                             check=_check_terminal))
# a whole document (concat=False) keeps its real end after a gap, as the authors' random variant; in a concatenated
# corpus a window of a + b tokens, endprompt-tail's: a target_len window, as before, kept only its head and tail, the
# same ones every epoch, so the arm trained on 1/8 of study-bpe's corpus tokens and 5% of its retrieval examples
# (measured before this change; now as endprompt-tail, results/study-bpe/extension_corpus_stats.csv): the two differ
# only in where the tail's positions sit
register_recipe("endprompt-random", RecipeSpec(cut=_cut_random, physical_len=_a_plus_b, full_doc_len=_a_plus_b,
                                               sample_len=_a_plus_b, min_doc_len=lambda r: r.b + 1,
                                               check=_check_terminal))
# room for the content that the PoSE skips jump over
register_recipe("endprompt-pose", RecipeSpec(cut=_cut_endprompt_pose, sample_len=lambda r: r.target_len - r.b,
                                             min_doc_len=lambda r: r.num_chunks, **_CUE_SPEC))
register_recipe("pose", RecipeSpec(cut=_cut_pose, physical_len=lambda r: r.window or r.a + r.b,
                                   full_doc_len=lambda r: r.physical_len, sample_len=lambda r: r.target_len,
                                   min_doc_len=lambda r: r.num_chunks, check=_check_pose))
register_recipe("full", _FULL)
register_recipe("longlora", dataclasses.replace(_FULL, s2_attention=True, default_lora_r=8))
register_recipe("pretrain", dataclasses.replace(_FULL, extends_positions=False))
# endprompt.sharedllm: plain text, no RoPE change
register_recipe("sharedllm", dataclasses.replace(_FULL, extends_positions=False, sharedllm=True))


def build_sample(doc, recipe: Recipe, rng: P.RngLike = None, cue_ids: Sequence[np.ndarray] | None = None,
                 stats: Counter | None = None) -> Sample | None:
    """Cut one sample from one tokenized document. Returns None when the document is skipped (counted in ``stats``).

    ``cue_ids`` (from `tokenize_cues`) is required by the cue recipes.
    """
    doc = np.asarray(doc, dtype=np.int64).ravel()
    gen = P.as_generator(rng)
    stats = stats if stats is not None else Counter()
    r, spec, n = recipe, recipe.spec, len(doc)
    short = n < spec.full_doc_len(r)
    if short and (r.short_docs == "error"):
        raise ValueError(f"document of {n} tokens is shorter than recipe {r.name!r} needs ({spec.full_doc_len(r)}); "
                         "use short_docs='shrink' or 'skip', or filter documents first")
    if n < spec.min_doc_len(r) or (short and r.short_docs == "skip"):
        stats["skipped"] += 1
        return None
    stats["shrunk" if short else "full"] += 1

    prompt = None
    if spec.uses_cues:
        if not cue_ids:
            raise ValueError(f"recipe {r.name!r} needs cue_ids; build them with tokenize_cues(recipe.cues, tokenizer)")
        prompt = cue_ids[int(gen.integers(len(cue_ids)))]
        if len(prompt) > r.b:
            raise ValueError(f"end prompt of {len(prompt)} tokens is longer than b={r.b}; raise Recipe.b")
    body, tail, pos = spec.cut(doc, r, gen, prompt)

    input_ids = np.concatenate([body, tail])
    weights = np.ones(len(input_ids), dtype=np.float32)
    if spec.uses_cues:
        weights[len(body) :] = r.prompt_weight
    if len(tail) and not r.jump_target:
        weights[len(body)] = 0.0  # the target predicted across the position jump (module docstring)
    segments = np.ones(len(input_ids), dtype=np.int64)
    segments[len(body) :] = 2
    return Sample(input_ids, pos, weights, segments)
