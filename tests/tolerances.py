"""Numerical tolerances, declared once for the whole suite."""

# our float64 numpy RoPE frequencies vs transformers' float32 torch ones
ROPE_RTOL = 2e-6
# the same model run two ways (padded vs unpadded vs packed) in float32
LOGITS_ATOL = 1e-5
# "this change must show in the logits": differences below this count as no change
LOGITS_CHANGED = 1e-4

# float64: one closed form against another written the same way (a few roundings apart)
FLOAT64_RTOL = 1e-12
# float64: slack of an inequality checked on computed values (bound <= value + ROUNDOFF)
ROUNDOFF = 1e-12
# float64: an identity reached by two different computations (autograd vs the closed-form derivative)
IDENTITY_RTOL = 1e-10
# float64: sums of tens to thousands of terms against another summation order (RoPE score vs rotated dot products,
# the Gram's closed form vs an explicit basis, a stored snapshot); GRAM_ATOL for Gram entries of ~1e4 summands
SUM_TOL = 1e-9
GRAM_ATOL = 1e-8
# central finite differences at step FD_STEP: O(step^2) truncation, O(eps/step) and O(eps/step^2) cancellation
FD_STEP = 1e-4
FD_RTOL, FD_ATOL = 1e-5, 1e-6  # first derivative
FD2_TOL = 1e-3  # second derivative (rtol and atol)
# the maximum of a sinusoid sampled on 20,001 points of one period: within (pi/20000)^2/2 ~ 1.2e-8 of the true one
GRID_MAX_ATOL = 1e-6
# a stored eigenvalue-based snapshot (LAPACK's results move in the last digits between BLAS builds)
SNAPSHOT_RTOL = 1e-6

# the same deterministic float computation on the same weights (reloaded, or stock vs our class): bit for bit
BITWISE = 0
# float64 softmax of the probed score polynomial vs the float32 model's eager attention weights (values in [0, 1])
ATTN_PROBS_ATOL = 1e-5
# one float32 attention computed two ways (S2-Attn's groups vs masked sdpa) on unit-scale inputs
ATTN_ATOL, ATTN_RTOL = 1e-6, 1e-5
# float32 cos/sin of a correctly formed angle (values in [-1, 1]): a few float32 ulps, on top of the angle's own error
COS_SIN_ATOL = 1e-6
# "these RoPE frequencies differ": another dynamic-NTK length moves them by far more than this, relative
ROPE_CHANGED = 1e-3
# "a structural change shows in the logits" (attention cut into groups): ten times LOGITS_CHANGED, well above rounding
LOGITS_CHANGED_STRUCTURALLY = 1e-3
# a float32 loss, gradient norm or perplexity reduced in another order (two ranks vs one, batched vs direct)
REDUCTION_RTOL = 1e-5
# weights after a few float32 optimizer steps whose gradients were reduced in another order (DDP/FSDP2 vs one process)
DISTRIBUTED_WEIGHTS_ATOL = 1e-4
# a share estimated from n seeded draws against its probability p: 0.02 is over 7 binomial standard deviations
# (sqrt(p (1 - p) / n) <= 0.0028 for n = 20,000), so a correct sampler fails it essentially never
SHARE_ATOL = 0.02
