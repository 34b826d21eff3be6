"""endprompt.bound against the lemmas of proofs/: input sanity, properties, numerical snapshot."""

import math

import numpy as np
import pytest
import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from endprompt import bound as B
from endprompt import positions as P
from endprompt import rope as R
from tests.tolerances import (
    FD2_TOL,
    FD_ATOL,
    FD_RTOL,
    FD_STEP,
    FLOAT64_RTOL,
    GRAM_ATOL,
    GRID_MAX_ATOL,
    IDENTITY_RTOL,
    ROUNDOFF,
    SNAPSHOT_RTOL,
    SUM_TOL,
)

SCALINGS = ["linear", "ntk", "dynamic", "yarn", "llama3"]
SCALES = [1, 2, 4, 8, 16]


def scaling(rope_type, s, original=4096):
    return R.RopeScaling() if s == 1 else R.for_extension(rope_type, original, original * s, rope_theta=10000.0)


# --- input sanity -----------------------------------------------------------------------------------------------------


def test_input_sanity():
    x = np.arange(8.0)
    np.testing.assert_array_equal(B.complex_pairs(x, "half"), [0 + 4j, 1 + 5j, 2 + 6j, 3 + 7j])
    np.testing.assert_array_equal(B.complex_pairs(x, "interleaved"), [0 + 1j, 2 + 3j, 4 + 5j, 6 + 7j])
    assert B.score_coefficients(np.ones((3, 8)), np.ones((3, 8))).shape == (3, 4)
    with pytest.raises(ValueError, match="unknown convention 'gptj'; valid conventions are: half, interleaved"):
        B.complex_pairs(x, "gptj")
    with pytest.raises(ValueError, match="must be even, got 7"):
        B.complex_pairs(np.ones(7))
    with pytest.raises(ValueError, match="coeffs have 4 frequencies but inv_freq has 3"):
        B.score([0, 1], np.ones(4), np.ones(3))
    assert B.score(np.arange(5), np.ones((2, 4)), np.ones(4), order=(0, 1, 2)).shape == (3, 2, 5)


# --- L1: the score is a trigonometric polynomial in the distance ------------------------------------------------------


def rotate_interleaved(x, pos, inv_freq):
    """Independent implementation: rotate each pair (x[2j], x[2j+1]) by the angle pos * theta_j."""
    out = x.copy()
    for j, th in enumerate(inv_freq):
        c, s = math.cos(pos * th), math.sin(pos * th)
        out[2 * j], out[2 * j + 1] = c * x[2 * j] - s * x[2 * j + 1], s * x[2 * j] + c * x[2 * j + 1]
    return out


@pytest.mark.parametrize("rope_type", ["default", *SCALINGS])
def test_l1_score_equals_the_rope_dot_product(rope_type):
    cfg = scaling(rope_type, 1 if rope_type == "default" else 8)
    inv_freq, af = R.compute_inv_freq(cfg, 32)
    rng = np.random.default_rng(1)
    q, k = rng.standard_normal((2, 32))
    pairs = [(0, 0), (5, 3), (32767, 0), (32767, 32766), (40000, 12)]  # includes EndPrompt-like jumps
    # half-split convention, with transformers' own apply_rotary_pos_emb (float64 cos/sin from our frequencies)
    m = torch.tensor([p[0] for p in pairs], dtype=torch.float64)
    n = torch.tensor([p[1] for p in pairs], dtype=torch.float64)
    th = torch.from_numpy(inv_freq)

    def cos_sin(pos):
        emb = torch.cat([pos[:, None] * th, pos[:, None] * th], dim=-1)[None]  # (1, len, D)
        return emb.cos() * af, emb.sin() * af

    qt = torch.from_numpy(q)[None, None].expand(1, 1, len(pairs), 32)  # (1, 1, len, D)
    kt = torch.from_numpy(k)[None, None].expand(1, 1, len(pairs), 32)
    q_rot, _ = apply_rotary_pos_emb(qt, qt, *cos_sin(m))
    _, k_rot = apply_rotary_pos_emb(kt, kt, *cos_sin(n))
    dots = (q_rot * k_rot).sum(-1)[0, 0].numpy()
    d = np.array([a - b for a, b in pairs])
    S = B.score(d, B.score_coefficients(q, k, "half", attention_factor=af), inv_freq)[0]
    np.testing.assert_allclose(S, dots, rtol=SUM_TOL, atol=SUM_TOL)
    # interleaved convention, with explicit 2x2 rotations
    dots = [rotate_interleaved(q, a, inv_freq) @ rotate_interleaved(k, b, inv_freq) for a, b in pairs]
    S = B.score(d, B.score_coefficients(q, k, "interleaved"), inv_freq)[0]
    np.testing.assert_allclose(S, dots, rtol=SUM_TOL, atol=SUM_TOL)


def test_l1_derivatives_against_finite_differences_and_autograd():
    inv_freq, _ = R.compute_inv_freq(R.for_extension("yarn", 4096, 32768, rope_theta=10000.0), 32)
    c = B.random_coefficients(4, 32, rng=2)
    d = np.array([0.0, 1.5, 100.25, 30000.0])
    S, S1, S2 = B.score(d, c, inv_freq, order=(0, 1, 2))
    eps = FD_STEP
    Sp, Sm = B.score(d + eps, c, inv_freq), B.score(d - eps, c, inv_freq)
    np.testing.assert_allclose(S1, (Sp - Sm) / (2 * eps), rtol=FD_RTOL, atol=FD_ATOL)
    np.testing.assert_allclose(S2, (Sp - 2 * S + Sm) / eps**2, rtol=FD2_TOL, atol=FD2_TOL)
    # autograd through an independent torch expression of Eq. 1
    alpha, beta = torch.from_numpy(c.real), torch.from_numpy(c.imag)
    th = torch.from_numpy(inv_freq)
    for i, di in enumerate(d):
        x = torch.tensor(di, dtype=torch.float64, requires_grad=True)
        s = (alpha * torch.cos(x * th) - beta * torch.sin(x * th)).sum(-1)  # (P,)
        for p in range(len(c)):
            (g,) = torch.autograd.grad(s[p], x, create_graph=True, retain_graph=True)
            (g2,) = torch.autograd.grad(g, x, retain_graph=True)
            assert g.item() == pytest.approx(S1[p, i], rel=IDENTITY_RTOL, abs=SUM_TOL)
            assert g2.item() == pytest.approx(S2[p, i], rel=IDENTITY_RTOL, abs=SUM_TOL)


# --- L2 and L3: bandwidth and Bernstein's inequality ------------------------------------------------------------------


@pytest.mark.parametrize("s", SCALES)
def test_l2_sigma_agrees_with_rope(s):
    for rope_type in SCALINGS:
        cfg = scaling(rope_type, s)
        inv_freq, _ = R.compute_inv_freq(cfg, 64, seq_len=4096 * s)
        assert B.bandwidth(cfg, 64, seq_len=4096 * s) == inv_freq.max()
        expected = 1 / s if rope_type == "linear" else 1.0  # only PI lowers theta_0
        assert B.bandwidth(cfg, 64, seq_len=4096 * s) == pytest.approx(expected, rel=FLOAT64_RTOL), (rope_type, s)


@pytest.mark.parametrize("rope_type", SCALINGS)
def test_l3_no_violation_over_random_pairs(rope_type):
    """10^4 random (q, k) per scaling type and s; grid step 0.05/sigma over 2048 points. The check is conservative
    (grid max of |S| <= sup|S|), so every ratio <= 1 certifies Eq. 3 at every sampled distance."""
    rng = np.random.default_rng(3)
    for s in SCALES:
        cfg = scaling(rope_type, s)
        inv_freq, _ = R.compute_inv_freq(cfg, 32, seq_len=4096 * s)
        sigma = B.bandwidth(cfg, 32, seq_len=4096 * s)
        d = np.arange(2048) * (0.05 / sigma)
        result = B.bernstein_check(B.random_coefficients(10_000, 32, rng), inv_freq, d, sigma)
        assert len(result["pair"]) == 10_000
        assert result["ratio_1"].max() <= 1.0, (rope_type, s, result["ratio_1"].max())
        assert result["ratio_2"].max() <= 1.0, (rope_type, s, result["ratio_2"].max())
        assert result["ratio_1"].max() > 0.5  # not vacuous: a wrong sigma (theta_0 under PI) would give <= 1/s


@pytest.mark.parametrize("s", SCALES)
def test_l3_equality_for_one_frequency_under_pi(s):
    """A single frequency attains Eq. 3. Under PI sigma = theta_0 / s: a wrong constant (theta_0) gives ratio 1/s."""
    cfg = scaling("linear", s)
    inv_freq, _ = R.compute_inv_freq(cfg, 32)
    c = np.zeros((1, 16), dtype=complex)
    c[0, 0] = 0.7 * np.exp(0.3j)  # only theta_0
    d = np.linspace(0, 2 * np.pi / inv_freq[0], 20_001)  # one full period
    result = B.bernstein_check(c, inv_freq, d, sigma=B.bandwidth(cfg, 32))
    assert result["ratio_1"][0] == pytest.approx(1.0, abs=GRID_MAX_ATOL)
    assert result["ratio_2"][0] == pytest.approx(1.0, abs=GRID_MAX_ATOL)
    wrong = B.bernstein_check(c, inv_freq, d, sigma=1.0)  # sigma = theta_0 ignores the interpolation
    if s > 1:
        assert wrong["ratio_1"][0] == pytest.approx(1 / s, abs=GRID_MAX_ATOL)


def test_l3_lipschitz_corollary():
    inv_freq, _ = R.compute_inv_freq(R.for_extension("linear", 4096, 32768, rope_theta=10000.0), 32)
    c = B.random_coefficients(200, 32, rng=4)
    d = np.arange(0, 8192, 0.5)
    S = B.score(d, c, inv_freq)
    sigma = inv_freq.max()
    sup = np.abs(S).max(axis=1, keepdims=True)  # <= sup|S|: a conservative check
    steps = np.abs(np.diff(S, axis=1))  # |S(d+h) - S(d)| <= sigma h sup|S|
    assert np.all(steps <= sigma * 0.5 * sup + ROUNDOFF)


# --- L4: enclosure of the supremum ------------------------------------------------------------------------------------


def test_l4_whole_line_enclosure_for_a_periodic_score():
    rng = np.random.default_rng(5)
    theta = np.array([5.0, 3.0, 2.0, 1.0])  # integer frequencies: period 2 pi, so a grid over one period is hZ
    c = rng.standard_normal((50, 4)) + 1j * rng.standard_normal((50, 4))
    for N in (16, 40, 200):
        h = 2 * np.pi / N
        lower, upper = B.sup_enclosure(B.score(np.arange(N) * h, c, theta), h, sigma=5.0, whole_line=True)
        fine = np.abs(B.score(np.linspace(0, 2 * np.pi, 200_001), c, theta)).max(axis=1)
        assert np.all(lower <= fine + ROUNDOFF) and np.all(fine <= upper + ROUNDOFF), N
    with pytest.raises(ValueError, match="sigma\\*h < 2"):
        B.sup_enclosure(np.ones((1, 3)), h=1.0, sigma=2.0, whole_line=True)


def test_l4_window_enclosure_for_rope_frequencies():
    inv_freq, _ = R.compute_inv_freq(R.for_extension("yarn", 4096, 32768, rope_theta=10000.0), 32)
    c = B.random_coefficients(100, 32, rng=6)
    sigma, h = inv_freq.max(), 2.0
    coarse = B.score(np.arange(0, 4096 + h, h), c, inv_freq)
    lower, upper = B.sup_enclosure(coarse, h, sigma, amplitude=np.abs(c).sum(axis=1))
    fine = np.abs(B.score(np.linspace(0, 4096, 400_001), c, inv_freq)).max(axis=1)
    assert np.all(lower <= fine + ROUNDOFF) and np.all(fine <= upper + ROUNDOFF)
    assert np.all(upper <= np.abs(c).sum(axis=1) + ROUNDOFF)


# --- L5: distance sets ------------------------------------------------------------------------------------------------


LAYOUTS = {  # pure layouts of endprompt.positions; the recipes' layouts are tested in test_bound_tables.py
    "endprompt": lambda a, b, L, g: P.endprompt_position_ids(a, b, L),
    "random": lambda a, b, L, g: P.random_endprompt_position_ids(a, b, L, g),
    "endprompt-pose": lambda a, b, L, g: P.endprompt_pose_position_ids(P.pose_chunk_lengths(a, 3, g), b, L, g),
    "pose": lambda a, b, L, g: P.pose_position_ids(P.pose_chunk_lengths(a + b, 2, g), L, g),
    "full": lambda a, b, L, g: P.full_position_ids(L),
}


@pytest.mark.parametrize("name", LAYOUTS)
def test_l5_distance_sets_against_brute_force(name):
    a, b, L, samples = 12, 3, 60, 5
    obs, gap = B.distance_sets(lambda g: LAYOUTS[name](a, b, L, g), L, samples=samples, rng=7)
    gen = np.random.default_rng(7)
    brute = set()
    for _ in range(samples):
        ids = LAYOUTS[name](a, b, L, gen)
        i, j = np.tril_indices(len(ids))
        brute |= set((ids[i] - ids[j]).tolist())
    as_set = lambda iv: {d for lo, hi in iv for d in range(lo, hi + 1)}
    assert as_set(obs) == brute and as_set(gap) == set(range(L)) - brute
    if name == "endprompt":
        eq8, eq9 = P.endprompt_distance_sets(a, b, L)
        np.testing.assert_array_equal(obs, eq8)
        np.testing.assert_array_equal(gap, eq9)


# --- L6: identifiability ----------------------------------------------------------------------------------------------


def test_l6_gram_is_exact():
    theta = np.array([1.0, 0.31, 0.05, 1e-3, 1e-9])
    intervals = [(0, 30), (100, 180), (5000, 5003)]
    d = np.concatenate([np.arange(lo, hi + 1) for lo, hi in intervals])
    basis = np.concatenate([np.cos(d[:, None] * theta), np.sin(d[:, None] * theta)], axis=1)  # (N, 2J)
    np.testing.assert_allclose(B.gram(intervals, theta), basis.T @ basis, rtol=SUM_TOL, atol=GRAM_ATOL)


def test_l6_identifiability_properties():
    inv_freq, _ = R.compute_inv_freq(R.for_extension("linear", 512, 4096, rope_theta=10000.0), 64)
    res = {}
    layouts = {"short": (lambda g: P.full_position_ids(532), 1),
               "endprompt": (lambda g: P.endprompt_position_ids(512, 20, 4096), 1),
               "pose": (lambda g: P.pose_position_ids(P.pose_chunk_lengths(532, 2, g), 4096, g), 64),
               "full": (lambda g: P.full_position_ids(4096), 1)}
    for label, (layout, samples) in layouts.items():
        obs, gap = B.distance_sets(layout, 4096, samples=samples)
        res[label] = B.identifiability(obs, gap, inv_freq)
        assert 0.0 <= res[label]["unexplained_gap"] <= 1.0
        assert res[label]["rank_observed"] <= 64
    assert res["full"]["gap"] == 0 and res["full"]["unexplained_gap"] == 0.0
    # the far distances EndPrompt adds pin down more of the gap than training at the short length alone
    assert res["short"]["unexplained_gap"] > res["endprompt"]["unexplained_gap"] > res["pose"]["unexplained_gap"]
    # a gap the observed set sees completely: observations on [0, 200] determine a 2-frequency score everywhere
    two = B.identifiability([(0, 200)], [(201, 5000)], np.array([1.0, 0.1]))
    assert two["rank_observed"] == 4 and two["unexplained_gap"] < ROUNDOFF and two["amplification"] > 1.0


# --- numerical snapshot -----------------------------------------------------------------------------------------------


def test_snapshot():
    inv_freq, _ = R.compute_inv_freq(R.for_extension("linear", 8192, 65536, rope_theta=10000.0), 8)
    c = B.score_coefficients(np.arange(1.0, 9.0), np.linspace(-1, 1, 8), "half")
    S = B.score([0, 1, 65535], c, inv_freq, order=(0, 1, 2))[:, 0]
    np.testing.assert_allclose(S, SNAPSHOT_S, rtol=SUM_TOL)
    obs, gap = B.distance_sets(lambda g: P.endprompt_position_ids(8192, 20, 65536), 65536)
    res = B.identifiability(obs, gap, R.compute_inv_freq(R.for_extension("linear", 8192, 65536, rope_theta=1e4), 16)[0])
    assert res["rank_observed"] == SNAPSHOT_ID["rank_observed"]
    assert res["amplification"] == pytest.approx(SNAPSHOT_ID["amplification"], rel=SNAPSHOT_RTOL)


# S, S', S'' at d = 0, 1, 65535 for q = 1..8, k = linspace(-1, 1, 8), PI s = 8, head_dim 8 (S(0) = q . k = 12)
SNAPSHOT_S = [[11.999999999999998, 12.714676803773033, 4.8445414175501265],
              [0.7142142857142857, 0.713461655708151, 0.02284812089036275],
              [0.004279794642857148, -0.0057835830419006775, 0.0794965575306563]]
# EndPrompt a=8192, b=20, L=65536, PI s=8, head_dim 16
SNAPSHOT_ID = {"rank_observed": 16, "amplification": 85.06465236334456}
