"""Optimizers for ALBERT pre-training and fine-tuning (optax).

- `warmup_linear_decay`: linear warm-up from 0 to the peak rate, then linear decay to `end_lr`,
  in Google's form (decay counted from step 0; the default) or HF's (decay from the peak).
- `decay_mask`: which parameters get weight decay (and, for LAMB, the layer-wise trust ratio):
  everything except biases and LayerNorm parameters.
- `adamw` and `lamb`: global-norm gradient clipping followed by the optimizer, with Google
  ALBERT's defaults (weight decay 0.01, b1 0.9, b2 0.999, eps 1e-6, clip norm 1.0, and no
  Adam bias correction, as Google's `AdamWeightDecayOptimizer` and `lamb_optimizer.py`);
  both are `google_adam`, which holds those defaults, with and without LAMB's trust ratio.
- `make_optimizer`: either of them by name. `accumulate`: gradient accumulation over k
  micro-batches with `optax.MultiSteps`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from albert_jax.errors import UserError

# A parameter is excluded from weight decay / trust ratio if its leaf name is one of these, or
# any enclosing module name contains one of the substrings below (Google's "LayerNorm",
# "layer_norm"; flax's LayerNorm keeps `scale` and `bias` under the module's name).
_EXCLUDED_LEAF_NAMES = ("bias",)
_EXCLUDED_MODULE_SUBSTRINGS = ("LayerNorm", "layer_norm")

MaskOrFn = Any  # a pytree of bools, a callable params -> such a pytree, or None


SCHEDULE_FORMS = ("google", "hf")


def warmup_linear_decay(
  peak_lr: float,
  total_steps: int,
  warmup_steps: int,
  end_lr: float = 0.0,
  form: str = "google",
) -> optax.Schedule:
  """Learning-rate schedule: linear warm-up from 0 to `peak_lr`, then linear decay to `end_lr`
  at `total_steps`, and `end_lr` after that. t is the optimizer step (0 for the first update).

  form="google" (Google's BERT/ALBERT `optimization.py`: `polynomial_decay` counted from step
  0, which the warm-up overrides for its first W steps, so the rate drops from `peak_lr` to
  `peak_lr * (1 - W/T)` at step W):
    lr(t) = peak_lr * t / W                                   for t < W
    lr(t) = end_lr + (peak_lr - end_lr) * (1 - t / T)         for W <= t <= T
  form="hf" (HF transformers' `get_linear_schedule_with_warmup`: the decay starts at the peak):
    lr(t) = peak_lr * t / W                                   for t < W
    lr(t) = peak_lr + (end_lr - peak_lr) * (t - W) / (T - W)  for W <= t <= T
  With W == 0 the schedule starts at the peak (google) or decays from it (both).
  """
  if form not in SCHEDULE_FORMS:
    raise UserError(f"Unknown schedule form {form!r}; use one of {SCHEDULE_FORMS}.")
  if peak_lr < 0:
    raise UserError(f"peak_lr must be >= 0, got {peak_lr}")
  if end_lr < 0:
    raise UserError(f"end_lr must be >= 0, got {end_lr}")
  if total_steps <= 0:
    raise UserError(f"total_steps must be > 0, got {total_steps}")
  if warmup_steps < 0:
    raise UserError(f"warmup_steps must be >= 0, got {warmup_steps}")
  if warmup_steps > total_steps:
    raise UserError(f"warmup_steps ({warmup_steps}) must not exceed total_steps ({total_steps})")
  # The step from which the linear decay is counted, and how long it lasts.
  decay_start = warmup_steps if form == "hf" else 0
  decay_steps = total_steps - decay_start

  def schedule(step: jax.typing.ArrayLike) -> jax.Array:
    t = jnp.asarray(step, dtype=jnp.float32)
    warm = peak_lr * t / max(warmup_steps, 1)
    frac = jnp.clip((t - decay_start) / max(decay_steps, 1), 0.0, 1.0)
    if decay_steps == 0:
      frac = jnp.ones_like(frac)
    decay = peak_lr + (end_lr - peak_lr) * frac
    return jnp.where(t < warmup_steps, warm, decay)

  return schedule


def _key_name(entry: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(entry, attr):
      return str(getattr(entry, attr))
  return str(entry)


def _decays(path: tuple[Any, ...]) -> bool:
  names = [_key_name(e) for e in path]
  if names and names[-1] in _EXCLUDED_LEAF_NAMES:
    return False
  return not any(sub in name for name in names for sub in _EXCLUDED_MODULE_SUBSTRINGS)


def decay_mask(params: Any) -> Any:
  """A pytree like `params` of Python bools: False for biases and LayerNorm parameters.

  A leaf is False when its own name is `bias`, or when any key on its path contains
  `LayerNorm` or `layer_norm` (so a flax LayerNorm's `scale` and `bias`); True otherwise.
  Works on nested dicts, flax `FrozenDict` and any pytree with named keys; the container
  types are kept, so the result can be used as an optax mask.
  """
  return jax.tree_util.tree_map_with_path(lambda path, _: _decays(path), params)


def adamw(learning_rate: optax.ScalarOrSchedule, **hparams: Any) -> optax.GradientTransformation:
  """Global-norm clipping (skipped if `clip_norm` is None), then AdamW with decoupled weight
  decay where `mask` is True (default: not biases and LayerNorm parameters; `mask=None` decays
  everything). `hparams` and their defaults: see `google_adam`. Per parameter w with gradient g:

    m = b1 * m + (1 - b1) * g;  v = b2 * v + (1 - b2) * g^2
    u = m / (sqrt(v) + eps)                (bias_correction: m / (1 - b1^t), v / (1 - b2^t))
    u += weight_decay * w                  (masked-in parameters only)
    w <- w - learning_rate * u

  The default, `bias_correction=False`, is Google's `AdamWeightDecayOptimizer` (BERT/ALBERT
  fine-tuning): its first update is m/sqrt(v) = 0.1 g / sqrt(0.001 g^2), about 3.16 times the
  bias-corrected one, and the two converge over the first few thousand steps.
  `bias_correction=True` is `optax.adamw` / PyTorch's AdamW / HF's.
  """
  return google_adam(learning_rate, trust_ratio=False, **hparams)


def lamb(learning_rate: optax.ScalarOrSchedule, **hparams: Any) -> optax.GradientTransformation:
  """LAMB as in Google's ALBERT: weight decay and the trust ratio only where `mask` is True.
  `hparams` and their defaults: see `google_adam`.

  `optax.lamb`'s `mask` covers only the weight decay and still applies the trust ratio to every
  parameter, so this is assembled from optax primitives. Per parameter w with gradient g
  (after global-norm clipping):

    m_hat, v_hat = Adam's moments of g (bias-corrected only if `bias_correction`)
    u = m_hat / (sqrt(v_hat) + eps)
    masked-in (kernels, embeddings):  u += weight_decay * w;  u *= ||w|| / ||u||
                                      (ratio 1 when either norm is 0)
    masked-out (biases, LayerNorm):   u unchanged (no decay, no trust ratio)
    w <- w - learning_rate * u

  Google's TF implementation (`lamb_optimizer.py`) omits Adam's bias correction, and so does
  the default here; `bias_correction=True` gives the LAMB paper's / optax's form. For
  masked-in parameters the trust ratio cancels most of the difference; for biases and
  LayerNorm the first steps are larger without it. `mask=None` applies decay and trust ratio
  to every parameter.
  """
  return google_adam(learning_rate, trust_ratio=True, **hparams)


def google_adam(
  learning_rate: optax.ScalarOrSchedule,
  *,
  trust_ratio: bool,  # LAMB's layer-wise trust ratio (where `mask` is True); False: AdamW
  weight_decay: float = 0.01,  # decoupled, where `mask` is True
  b1: float = 0.9,  # Adam's first-moment decay
  b2: float = 0.999,  # Adam's second-moment decay
  eps: float = 1e-6,  # added to sqrt(v)
  clip_norm: float | None = 1.0,  # global gradient norm; None: no clipping
  mask: MaskOrFn = decay_mask,  # which parameters decay (and get the trust ratio); None: all
  bias_correction: bool = False,  # Adam's bias correction (Google's optimizers have none)
) -> optax.GradientTransformation:
  """`adamw` (trust_ratio=False) or `lamb` (True), with Google ALBERT's defaults."""
  if weight_decay < 0:
    raise UserError(f"weight_decay must be >= 0, got {weight_decay}")
  for name, b in (("b1", b1), ("b2", b2)):
    if not 0.0 <= b < 1.0:
      raise UserError(f"{name} must be in [0, 1), got {b}")
  if eps < 0:
    raise UserError(f"eps must be >= 0, got {eps}")
  if clip_norm is not None and clip_norm <= 0:
    raise UserError(f"clip_norm must be > 0 (or None for no clipping), got {clip_norm}")
  steps = [
    _adam_moments(b1, b2, eps, bias_correction),
    optax.add_decayed_weights(weight_decay, mask=mask),
  ]
  if trust_ratio:
    ratio = optax.scale_by_trust_ratio()
    steps.append(ratio if mask is None else optax.masked(ratio, mask))
  tx = optax.chain(*steps, optax.scale_by_learning_rate(learning_rate))
  if clip_norm is None:
    return tx
  return optax.chain(optax.clip_by_global_norm(clip_norm), tx)


def _adam_moments(
  b1: float, b2: float, eps: float, bias_correction: bool
) -> optax.GradientTransformation:
  """u = m / (sqrt(v) + eps) from Adam's moments m, v; bias-corrected (optax) or not (Google)."""
  if bias_correction:
    return optax.scale_by_adam(b1=b1, b2=b2, eps=eps)
  return _scale_by_uncorrected_adam(b1, b2, eps)


def _scale_by_uncorrected_adam(b1: float, b2: float, eps: float) -> optax.GradientTransformation:
  """u = m / (sqrt(v) + eps) with Adam's moments m, v and no bias correction (Google's)."""

  def init(params):
    mu = jax.tree.map(jnp.zeros_like, params)
    nu = jax.tree.map(jnp.zeros_like, params)  # separate buffers: a donating step needs them
    return optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32), mu=mu, nu=nu)

  def update(grads, state, params=None):
    del params
    mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, grads)
    nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * jnp.square(g), state.nu, grads)
    updates = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + eps), mu, nu)
    return updates, optax.ScaleByAdamState(count=state.count + 1, mu=mu, nu=nu)

  return optax.GradientTransformation(init, update)


_OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
  "adamw": adamw,
  "lamb": lamb,
}


def make_optimizer(
  name: str, learning_rate: optax.ScalarOrSchedule, **kwargs: Any
) -> optax.GradientTransformation:
  """`adamw(learning_rate, **kwargs)` or `lamb(learning_rate, **kwargs)` by name (any case)."""
  key = name.strip().lower()
  if key not in _OPTIMIZERS:
    raise UserError(f"unknown optimizer {name!r}; known: {', '.join(_OPTIMIZERS)}")
  return _OPTIMIZERS[key](learning_rate, **kwargs)


def accumulate(
  optimizer: optax.GradientTransformation, every_k: int
) -> optax.GradientTransformationExtraArgs:
  """Gradient accumulation over `every_k` micro-batches (`optax.MultiSteps`).

  Each call to `update` adds the micro-batch gradient to a running mean; the first k-1 calls
  return all-zero updates, and every k-th call feeds the MEAN of the k gradients to
  `optimizer` (so clipping, moments and the schedule step once per k micro-batches) and returns
  its update. With a per-micro-batch mean loss this equals one step on the k-times larger batch.
  `every_k == 1` behaves like `optimizer` itself.
  """
  if isinstance(every_k, bool) or not isinstance(every_k, int) or every_k < 1:
    raise UserError(f"every_k must be a positive int, got {every_k!r}")
  return optax.MultiSteps(optimizer, every_k_schedule=every_k).gradient_transformation()
