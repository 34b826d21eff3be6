"""Synthetic tasks and offline text shared by training (`endprompt.mixture`) and evaluation (`endprompt.evaluate`).

`endprompt.tasks.synthetic` holds the generators (RULER's needles and variable tracking, passkey, MQAR, `fit_units`),
`endprompt.tasks.text` the haystack text, word lists and needle values. Both sit below training and evaluation in the
layering and import neither.
"""

from endprompt.tasks.synthetic import (
    NIAH,
    NiahSpec,
    TaskDoesNotFit,
    fit_units,
    mqar_example,
    niah,
    passkey,
    vt,
    vt_example,
)
from endprompt.tasks.text import NOISE

__all__ = ["NIAH", "NOISE", "NiahSpec", "TaskDoesNotFit", "fit_units", "mqar_example", "niah", "passkey", "vt",
           "vt_example"]
