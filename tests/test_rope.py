"""endprompt.rope: every type against transformers' ROPE_INIT_FUNCTIONS, conversion, bandwidth, errors."""

import math

import numpy as np
import pytest
import torch
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from endprompt import rope as R
from tests.tolerances import COS_SIN_ATOL, FLOAT64_RTOL, ROPE_RTOL


def _longrope_kwargs(dim):
    return {"short_factor": np.linspace(1.0, 1.5, dim // 2), "long_factor": np.linspace(1.0, 12.0, dim // 2)}


def configurations():
    """(RopeScaling, head_dim, target_len) over types, head dims, bases, factors and partial rotary factors."""
    out = [(R.RopeScaling(), 64, 4096), (R.RopeScaling(rope_theta=500000.0), 128, 8192),
           (R.RopeScaling(partial_rotary_factor=0.5), 64, 4096)]  # 'default' with a partial rotary factor
    for rope_type in ("linear", "ntk", "dynamic", "yarn", "llama3", "longrope"):
        for head_dim, theta, original, factor, partial in [
            (64, 10000.0, 8192, 8.0, 1.0),
            (128, 500000.0, 8192, 8.0, 1.0),
            (32, 10000.0, 256, 2.0, 1.0),
            (128, 1e6, 4096, 16.0, 1.0),
            (64, 10000.0, 2048, 4.0, 0.5),
        ]:
            kw = _longrope_kwargs(int(head_dim * partial)) if rope_type == "longrope" else {}
            if rope_type == "llama3" and partial != 1.0:
                continue  # transformers' llama3 ignores nothing here, but keep the grid small
            cfg = R.for_extension(rope_type, original, int(original * factor), rope_theta=theta,
                                  partial_rotary_factor=partial, **kw)
            out.append((cfg, head_dim, int(original * factor)))
    out.append((R.for_extension("yarn", 4096, 32768, rope_theta=1e4, beta_fast=16.0, beta_slow=2.0, truncate=False),
                64, 32768))
    out.append((R.for_extension("yarn", 4096, 32768, rope_theta=10000.0, mscale=1.0, mscale_all_dim=0.707), 64, 32768))
    out.append((R.for_extension("llama3", 8192, 131072, rope_theta=500000.0, low_freq_factor=2.0,
                                high_freq_factor=8.0), 128, 131072))
    return out


CONFIGS = configurations()
IDS = [f"{c.rope_type}-hd{h}-s{c.factor:g}-p{c.partial_rotary_factor:g}-{i}" for i, (c, h, _) in enumerate(CONFIGS)]


def hf_config(cfg, head_dim, target_len):
    kw = R.transformers_config_kwargs(cfg, target_len, head_dim=head_dim)
    return LlamaConfig(hidden_size=head_dim * 2, num_attention_heads=2, head_dim=head_dim, vocab_size=32, **kw)


# --- input sanity -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("cfg", "head_dim", "target_len"), CONFIGS, ids=IDS)
def test_inv_freq_sanity(cfg, head_dim, target_len):
    inv_freq, attention_factor = R.compute_inv_freq(cfg, head_dim)
    assert inv_freq.shape == (R.rotary_dim(cfg, head_dim) // 2,)
    assert np.all(inv_freq > 0) and np.all(np.isfinite(inv_freq))
    assert attention_factor >= 1.0
    if cfg.rope_type != "longrope":  # longrope's per-frequency factors may reorder
        assert np.all(np.diff(inv_freq) < 0)


# --- against transformers ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("cfg", "head_dim", "target_len"), CONFIGS, ids=IDS)
def test_matches_transformers_init_functions(cfg, head_dim, target_len):
    config = hf_config(cfg, head_dim, target_len)
    hf_type = config.rope_parameters["rope_type"]
    seq_lens = [None, target_len // 4, target_len + 1] if cfg.rope_type in ("dynamic", "longrope") else [None]
    for seq_len in seq_lens:
        ours, ours_af = R.compute_inv_freq(cfg, head_dim, seq_len=seq_len)
        if hf_type == "default":
            theirs, theirs_af = LlamaRotaryEmbedding.compute_default_rope_parameters(config)
        else:
            theirs, theirs_af = ROPE_INIT_FUNCTIONS[hf_type](config, seq_len=seq_len)
        np.testing.assert_allclose(ours, theirs.double().numpy(), rtol=ROPE_RTOL, err_msg=f"seq_len={seq_len}")
        assert math.isclose(ours_af, theirs_af, rel_tol=FLOAT64_RTOL)


@pytest.mark.parametrize(("cfg", "head_dim", "target_len"), [c for c in CONFIGS if c[0].partial_rotary_factor == 1],
                         ids=[i for i, c in zip(IDS, CONFIGS) if c[0].partial_rotary_factor == 1])
def test_model_built_from_conversion_uses_these_frequencies(cfg, head_dim, target_len):
    config = hf_config(cfg, head_dim, target_len)
    emb = LlamaRotaryEmbedding(config)
    ours, attention_factor = R.compute_inv_freq(cfg, head_dim)
    np.testing.assert_allclose(ours, emb.inv_freq.double().numpy(), rtol=ROPE_RTOL)
    assert math.isclose(emb.attention_scaling, attention_factor, rel_tol=FLOAT64_RTOL)
    # the cos/sin the model applies at jumped positions (the terminal segment) come from these frequencies; the model
    # recomputes length-dependent types at seq_len = max(position) + 1, and forms angles in float32, whose error grows
    # with the position: |angle error| <= ~3 * p * 2^-24
    pos = torch.tensor([[0, 1, target_len - 2, target_len - 1]])
    cos, sin = emb(torch.zeros(1, dtype=torch.float32), pos)
    at_len, _ = R.compute_inv_freq(cfg, head_dim, seq_len=target_len)
    angles = pos[0].double().numpy()[:, None] * at_len[None, :]  # (4, D/2)
    atol = attention_factor * 3 * target_len * 2.0**-24 + COS_SIN_ATOL
    np.testing.assert_allclose(cos[0, :, : len(ours)].double().numpy(), np.cos(angles) * attention_factor, atol=atol)
    np.testing.assert_allclose(sin[0, :, : len(ours)].double().numpy(), np.sin(angles) * attention_factor, atol=atol)
    # and back: the config parses to a scaling with the same frequencies
    back = R.from_transformers_config(config)
    np.testing.assert_allclose(R.compute_inv_freq(back, head_dim)[0], ours, rtol=FLOAT64_RTOL)


def test_old_style_rope_scaling_is_read():
    cfg = R.from_rope_parameters({"type": "linear", "factor": 4.0, "rope_theta": 10000.0})
    assert cfg == R.RopeScaling(rope_type="linear", factor=4.0)
    config = LlamaConfig(hidden_size=64, num_attention_heads=2, rope_scaling={"rope_type": "linear", "factor": 2.0})
    assert R.from_transformers_config(config).factor == 2.0


# --- properties from the paper ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("s", [2.0, 4.0, 8.0, 16.0])
def test_bandwidth_only_pi_lowers_the_top_frequency(s):
    # Eq. 2-3: PI divides theta_0 = 1 by s; NTK-aware, dynamic, YaRN and llama3 keep theta_0 unscaled
    orig = 4096
    pi = R.for_extension("linear", orig, int(orig * s), rope_theta=1e4)
    assert R.bandwidth(pi, 128) == pytest.approx(1 / s, rel=FLOAT64_RTOL)
    for rope_type in ("ntk", "dynamic", "yarn", "llama3"):
        cfg = R.for_extension(rope_type, orig, int(orig * s), rope_theta=1e4)
        assert R.bandwidth(cfg, 128, seq_len=int(orig * s)) == pytest.approx(1.0, rel=FLOAT64_RTOL), rope_type
    assert R.bandwidth(R.RopeScaling(), 128) == 1.0


def test_ntk_divides_the_lowest_frequency_by_s():
    # NTK-aware's base change base * s^(D/(D-2)) keeps theta_0 and divides the lowest frequency by exactly s, like PI
    lin = R.for_extension("linear", 8192, 65536, rope_theta=1e4)
    ntk = R.for_extension("ntk", 8192, 65536, rope_theta=1e4)
    assert R.compute_inv_freq(ntk, 128)[0][-1] == pytest.approx(R.compute_inv_freq(lin, 128)[0][-1], rel=FLOAT64_RTOL)
    assert R.compute_inv_freq(ntk, 128)[0][0] == 1.0


def test_snapshot():
    inv_freq, af = R.compute_inv_freq(R.for_extension("yarn", 8192, 65536, rope_theta=1e4), 16)
    np.testing.assert_allclose(
        inv_freq,
        [1.0, 0.31622776601683794, 0.1, 0.03162277660168379, 0.0078125, 0.0017787811838447137, 0.00034375,
         3.952847075210474e-05],
        rtol=FLOAT64_RTOL,
    )
    assert af == pytest.approx(0.1 * math.log(8) + 1)  # YaRN's default attention factor
    assert R.compute_inv_freq(R.for_extension("linear", 8192, 65536, rope_theta=1e4), 4)[0].tolist() == [0.125, 0.00125]


def test_extension_keeps_the_model_s_base():
    # a real model's base (SmolLM2: 100000) is taken from its config; without a base the helper refuses to guess
    config = LlamaConfig(hidden_size=128, num_attention_heads=2, vocab_size=32, rope_theta=100000.0,
                         max_position_embeddings=8192)
    rope = R.for_extension("linear", 8192, 16384, base=config)
    assert R.transformers_config_kwargs(rope, 16384)["rope_parameters"]["rope_theta"] == 100000.0
    assert R.for_extension("yarn", 8192, 16384, base=R.RopeScaling(rope_theta=5e5)).rope_theta == 5e5
    with pytest.raises(ValueError, match="needs the model's RoPE base: pass base=model.config"):
        R.for_extension("linear", 8192, 16384)
    with pytest.raises(ValueError, match="contradicts the base's rope_theta=100000.0"):
        R.for_extension("linear", 8192, 16384, base=config, rope_theta=10000.0)


# --- bad input --------------------------------------------------------------------------------------------------------


def test_errors():
    with pytest.raises(ValueError, match="unknown rope_type 'pi'; valid types are: default, dynamic, linear"):
        R.RopeScaling(rope_type="pi")
    with pytest.raises(ValueError, match=r"factor=4 is inconsistent with target_len=65536 .* factor >= 8"):
        R.for_extension("linear", 8192, 65536, factor=4, rope_theta=1e4)
    with pytest.raises(ValueError, match="requires original_max_position_embeddings"):
        R.RopeScaling(rope_type="yarn", factor=8.0)
    with pytest.raises(ValueError, match="takes no factor"):
        R.RopeScaling(factor=2.0)
    with pytest.raises(ValueError, match="factor must be a number >= 1"):
        R.RopeScaling(rope_type="linear", factor=0.5)
    with pytest.raises(ValueError, match="beta_fast > beta_slow"):
        R.for_extension("yarn", 10, 80, beta_fast=1.0, beta_slow=2.0, rope_theta=1e4)
    with pytest.raises(ValueError, match="must be even"):
        R.compute_inv_freq(R.RopeScaling(partial_rotary_factor=0.3), 10)
    with pytest.raises(ValueError, match="endprompt supports"):
        R.from_rope_parameters({"rope_type": "mrope"})
    with pytest.raises(ValueError, match="needs head_dim"):
        R.to_rope_parameters(R.for_extension("ntk", 10, 80, rope_theta=1e4))
