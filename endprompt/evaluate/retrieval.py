"""Passkey retrieval (the PI paper's prompt), the needle-in-a-haystack grid, and MQAR.

- Passkey: filler "The grass is green. ..." with "The pass key is N. Remember it. N is the pass key." at a random depth,
  then "What is the pass key? The pass key is". Evaluated at many lengths; `endprompt.evaluate.scoring.k_max` gives
  the effective length. ``style="compact"`` drops the preamble for tiny byte-level contexts.
- Needle grid: niah_single_1's needle at fixed depths (0..100%) x lengths, for the heatmap.
- MQAR (Arora et al., Zoology): key-value pairs, then the keys again in another order; accuracy of the greedy
  next-token prediction at the value tokens of the queries (one teacher-forced forward pass), a proxy that tiny models
  learn.
"""

from __future__ import annotations

import numpy as np

from endprompt.evaluate.ruler import EvalSample
from endprompt.tasks import fit_units, passkey
from endprompt.tasks.text import NOISE, random_key, random_value

__all__ = ["passkey_samples", "needle_grid_samples"]

def passkey_samples(length: int, tokenizer, num_samples: int = 10, seed: int = 0, style: str = "ruler",
                    digits: int = 5, max_new_tokens: int | None = None) -> list[EvalSample]:
    """Passkey prompts fitted to ``length`` tokens (prompt + budget); depth uniform in [0, 1]."""
    budget = max_new_tokens or 2 * digits + 2
    count = lambda t: len(tokenizer(t, add_special_tokens=False).input_ids)
    out = []
    for i in range(num_samples):
        rng = np.random.default_rng([seed, 1001, length, i])
        key = str(int(rng.integers(10 ** (digits - 1), 10**digits)))
        depth = float(rng.random())
        n = fit_units(lambda m, key=key, depth=depth: passkey(m, key, depth, style), count, length - budget, start=8)
        prompt = passkey(n, key, depth, style)
        out.append(EvalSample("passkey", length, i, prompt, [key], budget, "all", count(prompt),
                              {"depth": depth, "units": n}))
    return out


def needle_grid_samples(length: int, depth: float, tokenizer, num_samples: int = 4, seed: int = 0,
                        style: str = "ruler") -> list[EvalSample]:
    """niah_single_1-style prompts with the needle at ``depth`` (0 = start, 1 = end of the haystack)."""
    needle_fmt = ("One of the special magic numbers for {key} is: {value}." if style == "ruler"
                  else "The number for {key} is {value}.")
    budget = 16 if style == "compact" else 128
    count = lambda t: len(tokenizer(t, add_special_tokens=False).input_ids)
    out = []
    for i in range(num_samples):
        rng = np.random.default_rng([seed, 1002, length, int(round(depth * 1000)), i])
        key, value = random_key(rng), random_value("numbers", rng)

        def build(n, key=key, value=value):
            cut = int(round(depth * n))
            context = "\n".join([NOISE] * cut + [needle_fmt.format(key=key, value=value)] + [NOISE] * (n - cut))
            if style == "compact":
                return f"{context}\nWhat is the number for {key}? Answer: The number for {key} is"
            return ("A special magic number is hidden within the following text. Make sure to memorize it. I will quiz "
                    f"you about the number afterwards.\n{context}\nWhat is the special magic number for {key} "
                    f"mentioned in the provided text? The special magic number for {key} mentioned in the provided "
                    "text is")

        n = fit_units(build, count, length - budget, start=8)
        prompt = build(n)
        out.append(EvalSample("needle", length, i, prompt, [value], budget, "all", count(prompt),
                              {"depth": depth, "units": n}))
    return out
