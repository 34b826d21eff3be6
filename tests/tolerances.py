"""Numerical tolerances, declared once for the whole suite."""

# our float64 numpy RoPE frequencies vs transformers' float32 torch ones
ROPE_RTOL = 2e-6
# the same model run two ways (padded vs unpadded vs packed) in float32
LOGITS_ATOL = 1e-5
# "this change must show in the logits": differences below this count as no change
LOGITS_CHANGED = 1e-4
