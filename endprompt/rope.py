"""RoPE scalings: a registry of pure functions returning ``(inv_freq, attention_factor)``, as transformers does.

Each registered type has one compute function and one validator. The compute functions follow
``transformers.modeling_rope_utils.ROPE_INIT_FUNCTIONS`` (transformers 5.x) formula for formula, in float64 numpy, so
`endprompt.bound` can use them without importing torch; `tests/test_rope.py` compares every type with transformers.

The types and which frequencies ``theta_j = base^(-2j/D)`` they change (``s`` = ``factor``):

- ``default``:  none.
- ``linear``:   all, ``theta_j / s`` (position interpolation, the paper's Eq. 2). The only type that lowers the top
  frequency ``theta_0``, hence the bandwidth sigma of Eq. 3.
- ``ntk``:      static NTK-aware base change ``base * s^(D/(D-2))``: ``theta_0 = 1`` is kept, the lowest frequency
  is divided by ``s``.
  transformers has no static type; it is expressed there as ``default`` with the new ``rope_theta``.
- ``dynamic``:  the NTK base change recomputed from the current length ``seq_len`` (none up to the original length).
- ``yarn``:     "NTK-by-parts": high-frequency dims (more than ``beta_fast`` rotations over the original length) kept,
  low-frequency dims (fewer than ``beta_slow``) divided by ``s``, a linear ramp between; plus an attention factor.
- ``llama3``:   wavelengths below ``original/high_freq_factor`` kept, above ``original/low_freq_factor`` divided by
  ``s``, smooth interpolation between.
- ``longrope``: per-frequency factors (``short_factor`` up to the original length, ``long_factor`` beyond).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

__all__ = [
    "RopeScaling",
    "ROPE_SCALINGS",
    "ROPE_VALIDATORS",
    "register_rope_scaling",
    "compute_inv_freq",
    "bandwidth",
    "rotary_dim",
    "for_extension",
    "to_rope_parameters",
    "transformers_config_kwargs",
    "from_rope_parameters",
    "from_transformers_config",
]


@dataclass(frozen=True)
class RopeScaling:
    """One RoPE configuration, in transformers' vocabulary (``rope_parameters`` keys).

    Attributes:
        rope_type: a key of `ROPE_SCALINGS`.
        rope_theta: the base of the frequencies ``theta_j = rope_theta^(-2j/D)``.
        factor: the scale ``s`` (``target_len / original length`` for context extension); 1 means no scaling.
        original_max_position_embeddings: the pretraining length; required by yarn, llama3, longrope and dynamic.
        partial_rotary_factor: fraction of the head dim that is rotated (``D = int(head_dim * partial_rotary_factor)``).
        attention_factor: yarn/longrope cos/sin multiplier; None means the type's recommended value.
        beta_fast, beta_slow, mscale, mscale_all_dim, truncate: yarn parameters (transformers' defaults).
        low_freq_factor, high_freq_factor: llama3 parameters.
        short_factor, long_factor: longrope per-frequency factors, ``D/2`` values each.
    """

    rope_type: str = "default"
    rope_theta: float = 10000.0
    factor: float = 1.0
    original_max_position_embeddings: int | None = None
    partial_rotary_factor: float = 1.0
    attention_factor: float | None = None
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    mscale: float | None = None
    mscale_all_dim: float | None = None
    truncate: bool = True
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    short_factor: tuple[float, ...] | None = None
    long_factor: tuple[float, ...] | None = None

    def __post_init__(self):
        if self.rope_type not in ROPE_SCALINGS:
            raise ValueError(
                f"unknown rope_type {self.rope_type!r}; valid types are: {', '.join(sorted(ROPE_SCALINGS))}"
            )
        for name in ("short_factor", "long_factor"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(float(x) for x in value))
        if not self.rope_theta > 0:
            raise ValueError(f"rope_theta must be > 0, got {self.rope_theta}")
        if not 0 < self.partial_rotary_factor <= 1:
            raise ValueError(f"partial_rotary_factor must be in (0, 1], got {self.partial_rotary_factor}")
        if not (isinstance(self.factor, (int, float)) and self.factor >= 1.0):
            raise ValueError(f"factor must be a number >= 1 (1 = no scaling), got {self.factor!r}")
        if self.original_max_position_embeddings is not None and self.original_max_position_embeddings < 1:
            raise ValueError(
                f"original_max_position_embeddings must be >= 1, got {self.original_max_position_embeddings}"
            )
        ROPE_VALIDATORS[self.rope_type](self)

    def replace(self, **changes) -> RopeScaling:
        return dataclasses.replace(self, **changes)


# --- registry ---------------------------------------------------------------------------------------------------------

RopeFn = Callable[[RopeScaling, int, "int | None"], tuple[np.ndarray, float]]
ROPE_SCALINGS: dict[str, RopeFn] = {}
ROPE_VALIDATORS: dict[str, Callable[[RopeScaling], None]] = {}


def register_rope_scaling(name: str, validator: Callable[[RopeScaling], None]):
    """Decorator: register ``fn(cfg, head_dim, seq_len=None) -> (inv_freq, attention_factor)`` under ``name``."""

    def deco(fn: RopeFn) -> RopeFn:
        ROPE_SCALINGS[name] = fn
        ROPE_VALIDATORS[name] = validator
        return fn

    return deco


def rotary_dim(cfg: RopeScaling, head_dim: int) -> int:
    """The rotated dimension ``D``; RoPE pairs need it even."""
    if head_dim < 2:
        raise ValueError(f"head_dim must be >= 2, got {head_dim}")
    dim = int(head_dim * cfg.partial_rotary_factor)
    if dim < 2 or dim % 2:
        raise ValueError(
            f"rotary dim int(head_dim * partial_rotary_factor) = int({head_dim} * {cfg.partial_rotary_factor}) = {dim} "
            "must be even and >= 2"
        )
    return dim


def _base_inv_freq(base: float, dim: int) -> np.ndarray:
    return 1.0 / base ** (np.arange(0, dim, 2, dtype=np.float64) / dim)  # (dim/2,)


def _needs(cfg: RopeScaling, *fields: str) -> None:
    missing = [f for f in fields if getattr(cfg, f) is None]
    if missing:
        raise ValueError(f"rope_type {cfg.rope_type!r} requires {', '.join(missing)}; set it in RopeScaling(...)")


def _no_check(cfg: RopeScaling) -> None:
    return None


def _check_default(cfg: RopeScaling) -> None:
    if cfg.factor != 1.0:
        raise ValueError(f"rope_type 'default' takes no factor (got factor={cfg.factor}); use 'linear' or another type")


def _check_original(cfg: RopeScaling) -> None:
    _needs(cfg, "original_max_position_embeddings")


def _check_yarn(cfg: RopeScaling) -> None:
    _check_original(cfg)
    if cfg.beta_fast <= cfg.beta_slow:
        raise ValueError(f"yarn needs beta_fast > beta_slow, got beta_fast={cfg.beta_fast}, beta_slow={cfg.beta_slow}")
    if cfg.attention_factor is not None and cfg.attention_factor <= 0:
        raise ValueError(f"attention_factor must be > 0, got {cfg.attention_factor}")


def _check_llama3(cfg: RopeScaling) -> None:
    _check_original(cfg)
    if not cfg.high_freq_factor > cfg.low_freq_factor > 0:
        raise ValueError(
            f"llama3 needs high_freq_factor > low_freq_factor > 0, got {cfg.high_freq_factor}, {cfg.low_freq_factor}"
        )


def _check_longrope(cfg: RopeScaling) -> None:
    _needs(cfg, "original_max_position_embeddings", "short_factor", "long_factor")
    if len(cfg.short_factor) != len(cfg.long_factor):
        raise ValueError(
            f"longrope short_factor ({len(cfg.short_factor)} values) and long_factor ({len(cfg.long_factor)}) differ"
        )
    if min(cfg.short_factor + cfg.long_factor) <= 0:
        raise ValueError("longrope short_factor and long_factor values must all be > 0")


@register_rope_scaling("default", _check_default)
def _default(cfg: RopeScaling, head_dim: int, seq_len: int | None = None) -> tuple[np.ndarray, float]:
    return _base_inv_freq(cfg.rope_theta, rotary_dim(cfg, head_dim)), 1.0


@register_rope_scaling("linear", _no_check)
def _linear(cfg: RopeScaling, head_dim: int, seq_len: int | None = None) -> tuple[np.ndarray, float]:
    # Eq. 2: position p becomes p / s, equivalently theta_j / s for every j
    return _base_inv_freq(cfg.rope_theta, rotary_dim(cfg, head_dim)) / cfg.factor, 1.0


@register_rope_scaling("ntk", _no_check)
def _ntk(cfg: RopeScaling, head_dim: int, seq_len: int | None = None) -> tuple[np.ndarray, float]:
    dim = rotary_dim(cfg, head_dim)
    return _base_inv_freq(cfg.rope_theta * cfg.factor ** (dim / (dim - 2)), dim), 1.0


@register_rope_scaling("dynamic", _check_original)
def _dynamic(cfg: RopeScaling, head_dim: int, seq_len: int | None = None) -> tuple[np.ndarray, float]:
    dim = rotary_dim(cfg, head_dim)
    original = cfg.original_max_position_embeddings
    seq_len = original if seq_len is None else max(int(seq_len), original)
    base = cfg.rope_theta * ((cfg.factor * seq_len / original) - (cfg.factor - 1)) ** (dim / (dim - 2))
    return _base_inv_freq(base, dim), 1.0


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


@register_rope_scaling("yarn", _check_yarn)
def _yarn(cfg: RopeScaling, head_dim: int, seq_len: int | None = None) -> tuple[np.ndarray, float]:
    dim, base, s = rotary_dim(cfg, head_dim), cfg.rope_theta, cfg.factor
    original = cfg.original_max_position_embeddings
    attention_factor = cfg.attention_factor
    if attention_factor is None:
        if cfg.mscale and cfg.mscale_all_dim:
            attention_factor = _yarn_mscale(s, cfg.mscale) / _yarn_mscale(s, cfg.mscale_all_dim)
        else:
            attention_factor = _yarn_mscale(s)

    def correction_dim(num_rotations: float) -> float:
        # the dim index whose wavelength fits num_rotations times into the original length
        return dim * math.log(original / (num_rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(cfg.beta_fast), correction_dim(cfg.beta_slow)
    if cfg.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # transformers' guard against a zero-width ramp
    ramp = np.clip((np.arange(dim // 2, dtype=np.float64) - low) / (high - low), 0, 1)  # (dim/2,)
    extrapolation = 1 - ramp  # 1 = keep the frequency, 0 = interpolate it by s
    inv_freq = _base_inv_freq(base, dim)
    return inv_freq / s * (1 - extrapolation) + inv_freq * extrapolation, float(attention_factor)


@register_rope_scaling("llama3", _check_llama3)
def _llama3(cfg: RopeScaling, head_dim: int, seq_len: int | None = None) -> tuple[np.ndarray, float]:
    inv_freq = _base_inv_freq(cfg.rope_theta, rotary_dim(cfg, head_dim))
    original, s = cfg.original_max_position_embeddings, cfg.factor
    low_freq_wavelen = original / cfg.low_freq_factor
    high_freq_wavelen = original / cfg.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > low_freq_wavelen, inv_freq / s, inv_freq)
    smooth = (original / wavelen - cfg.low_freq_factor) / (cfg.high_freq_factor - cfg.low_freq_factor)
    smoothed = (1 - smooth) * scaled / s + smooth * scaled
    medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return np.where(medium, smoothed, scaled), 1.0


@register_rope_scaling("longrope", _check_longrope)
def _longrope(cfg: RopeScaling, head_dim: int, seq_len: int | None = None) -> tuple[np.ndarray, float]:
    dim = rotary_dim(cfg, head_dim)
    original = cfg.original_max_position_embeddings
    if len(cfg.short_factor) != dim // 2:
        raise ValueError(f"longrope factors need rotary_dim/2 = {dim // 2} values, got {len(cfg.short_factor)}")
    attention_factor = cfg.attention_factor
    if attention_factor is None:
        attention_factor = 1.0 if cfg.factor <= 1 else math.sqrt(1 + math.log(cfg.factor) / math.log(original))
    long = seq_len is not None and seq_len > original
    ext = np.asarray(cfg.long_factor if long else cfg.short_factor, dtype=np.float64)
    return _base_inv_freq(cfg.rope_theta, dim) / ext, float(attention_factor)


def compute_inv_freq(cfg: RopeScaling, head_dim: int, seq_len: int | None = None) -> tuple[np.ndarray, float]:
    """``(inv_freq, attention_factor)`` for ``cfg``: ``inv_freq`` has shape ``(rotary_dim/2,)``, float64.

    ``seq_len`` matters only to length-dependent types (dynamic, longrope): the frequencies a *fresh* transformers
    rotary embedding uses for a forward pass of ``seq_len`` tokens. transformers' dynamic embedding then keeps the
    frequencies of its longest pass (until a pass shorter than the original length), so a later, shorter pass differs
    from this; `endprompt.evaluate.dynamic_rope.pin_dynamic_rope` sets a model to these frequencies for one length.
    """
    return ROPE_SCALINGS[cfg.rope_type](cfg, head_dim, seq_len)


def bandwidth(cfg: RopeScaling, head_dim: int, seq_len: int | None = None) -> float:
    """sigma = max_j inv_freq_j: the exponential type of the score S(d) (Eq. 3). ``theta_0 / s`` under PI, else 1
    for ntk/dynamic/yarn/llama3 (their top frequency is unscaled)."""
    return float(compute_inv_freq(cfg, head_dim, seq_len)[0].max())


def for_extension(
    rope_type: str, original_len: int, target_len: int, factor: float | None = None, *, base=None, **kwargs
) -> RopeScaling:
    """A scaling that extends a model pretrained at ``original_len`` to ``target_len``.

    ``factor`` defaults to ``target_len / original_len`` (the paper: 65536 / 8192 = 8). A given factor must cover the
    target, ``factor * original_len >= target_len``; otherwise positions near the target would fall outside the range
    the scaling maps back into the pretrained one.

    The base frequencies are the model's: pass ``base`` (its transformers config, or a `RopeScaling`), whose
    ``rope_theta`` and ``partial_rotary_factor`` are kept, or ``rope_theta=`` explicitly. Without either this raises:
    a default base would silently replace the model's (SmolLM2 uses 100000, Llama-3 500000, not 10000).
    """
    if base is not None:
        known = base if isinstance(base, RopeScaling) else from_transformers_config(base)
        if "rope_theta" in kwargs and kwargs["rope_theta"] != known.rope_theta:
            raise ValueError(f"rope_theta={kwargs['rope_theta']} contradicts the base's rope_theta="
                             f"{known.rope_theta}; give one of them")
        kwargs.setdefault("rope_theta", known.rope_theta)
        kwargs.setdefault("partial_rotary_factor", known.partial_rotary_factor)
    if "rope_theta" not in kwargs:
        raise ValueError("for_extension needs the model's RoPE base: pass base=model.config (or a RopeScaling), or "
                         "rope_theta=<the model's rope_theta>; a default would silently replace it")
    if original_len < 1 or target_len < 1:
        raise ValueError(f"original_len and target_len must be >= 1, got {original_len}, {target_len}")
    if target_len <= original_len:
        raise ValueError(f"target_len={target_len} must exceed original_len={original_len} to extend the context")
    if factor is None:
        factor = target_len / original_len
    elif factor * original_len < target_len:
        raise ValueError(
            f"factor={factor} is inconsistent with target_len={target_len} and original_len={original_len}: "
            f"factor * original_len = {factor * original_len} < target_len. Use factor >= {target_len / original_len} "
            "(or leave it None for target_len / original_len)."
        )
    if rope_type == "default":
        raise ValueError("rope_type 'default' does not extend; use linear, ntk, dynamic, yarn, llama3, longrope")
    return RopeScaling(rope_type=rope_type, factor=float(factor), original_max_position_embeddings=original_len,
                       **kwargs)


# --- transformers conversion ------------------------------------------------------------------------------------------

_TYPE_KEYS = {
    "default": (),
    "linear": ("factor",),
    "dynamic": ("factor",),
    "yarn": ("factor", "original_max_position_embeddings", "attention_factor", "beta_fast", "beta_slow", "mscale",
             "mscale_all_dim", "truncate"),
    "llama3": ("factor", "original_max_position_embeddings", "low_freq_factor", "high_freq_factor"),
    "longrope": ("factor", "original_max_position_embeddings", "attention_factor", "short_factor", "long_factor"),
}


def to_rope_parameters(cfg: RopeScaling, head_dim: int | None = None) -> dict:
    """The transformers 5.x ``rope_parameters`` dict that makes a model compute exactly `compute_inv_freq(cfg)`.

    ``ntk`` has no transformers type: it becomes ``default`` with the changed ``rope_theta`` (``head_dim`` needed).
    When only part of the head rotates, ``default`` (and ``ntk``) become ``linear`` with factor 1: transformers'
    Llama ``default`` ignores ``partial_rotary_factor`` (it would rotate the whole head), ``linear`` honours it.
    """
    if cfg.rope_type == "ntk":
        if head_dim is None:
            raise ValueError("converting rope_type 'ntk' needs head_dim (the base change depends on the rotary dim)")
        dim = rotary_dim(cfg, head_dim)
        params = {"rope_type": "default", "rope_theta": cfg.rope_theta * cfg.factor ** (dim / (dim - 2))}
    else:
        params = {"rope_type": cfg.rope_type, "rope_theta": cfg.rope_theta}
        for key in _TYPE_KEYS[cfg.rope_type]:
            value = getattr(cfg, key)
            if value is not None:
                params[key] = list(value) if isinstance(value, tuple) else value
    if cfg.partial_rotary_factor != 1.0:
        if params["rope_type"] == "default":
            params.update(rope_type="linear", factor=1.0)
        params["partial_rotary_factor"] = cfg.partial_rotary_factor
    return params


def transformers_config_kwargs(cfg: RopeScaling, target_len: int, head_dim: int | None = None) -> dict:
    """``rope_parameters`` and ``max_position_embeddings`` for a transformers config.

    For ``dynamic``, transformers rescales only beyond ``max_position_embeddings``, so that is the original length.
    """
    max_pos = target_len
    if cfg.rope_type == "dynamic":
        max_pos = cfg.original_max_position_embeddings
    return {"rope_parameters": to_rope_parameters(cfg, head_dim), "max_position_embeddings": max_pos}


def from_rope_parameters(params: Mapping | None, max_position_embeddings: int | None = None) -> RopeScaling:
    """Parse transformers' ``rope_parameters`` (5.x) or the older ``rope_scaling`` (``type`` or ``rope_type`` key)."""
    params = dict(params or {})
    rope_type = params.pop("rope_type", None) or params.pop("type", None) or "default"
    params.pop("type", None)
    if rope_type not in ROPE_SCALINGS:
        raise ValueError(f"unknown rope_type {rope_type!r} in the model config; endprompt supports: "
                         f"{', '.join(sorted(ROPE_SCALINGS))}")
    fields = {f.name for f in dataclasses.fields(RopeScaling)}
    unknown = sorted(set(params) - fields)
    if unknown:
        raise ValueError(f"rope parameters {unknown} are not supported by endprompt.rope.RopeScaling")
    params = {k: v for k, v in params.items() if v is not None}
    if rope_type == "dynamic" and "original_max_position_embeddings" not in params:
        params["original_max_position_embeddings"] = max_position_embeddings
    if rope_type in ("yarn", "llama3", "longrope") and "original_max_position_embeddings" not in params:
        params["original_max_position_embeddings"] = max_position_embeddings
    if rope_type == "longrope" and "factor" not in params and max_position_embeddings:
        params["factor"] = max_position_embeddings / params["original_max_position_embeddings"]
    return RopeScaling(rope_type=rope_type, **params)


def from_transformers_config(config) -> RopeScaling:
    """The `RopeScaling` of a transformers ``PretrainedConfig`` (``rope_parameters``, else ``rope_scaling``)."""
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None)
    if params is None and getattr(config, "rope_theta", None) is None:
        raise ValueError(f"{type(config).__name__} has no RoPE parameters (no rope_parameters, rope_scaling or "
                         "rope_theta); endprompt extends RoPE models only")
    params = dict(params or {"rope_type": "default", "rope_theta": config.rope_theta})
    return from_rope_parameters(params, getattr(config, "max_position_embeddings", None))
