"""endprompt: extend the context window of RoPE language models with short training sequences.

EndPrompt (arXiv 2605.14589) keeps a short text at positions ``0..a-1`` and appends a short terminal segment whose
positions end at the target length ``L``, with linear position interpolation. The submodules are imported lazily so
that ``import endprompt`` (and the CLI) stays fast; ``endprompt.positions`` and ``endprompt.rope`` need only numpy,
``endprompt.bound`` numpy and scipy (its pandas tables are in ``endprompt.bound_tables``).
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = ("positions", "rope", "recipe", "batching")


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"endprompt.{name}")
    raise AttributeError(f"module 'endprompt' has no attribute {name!r}")
