"""Offline evaluation: RULER-style tasks, passkey, needle grid, perplexity by length, MQAR (see `runner.evaluate`)."""

from endprompt.evaluate.runner import SUITES, evaluate, generate, run_lm_eval, save_results, summarize

__all__ = ["SUITES", "evaluate", "generate", "run_lm_eval", "save_results", "summarize"]
