"""AdamW with linear warm-up and a configurable decay (optax)."""

from __future__ import annotations

import dataclasses

import jax
import optax


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """AdamW and its learning-rate schedule."""

  learning_rate: float = 1e-3  # Peak learning rate, reached after warm-up.
  warmup_steps: int = 100  # Linear warm-up from 0 to the peak.
  decay: str = 'cosine'  # After warm-up: 'cosine', 'linear', 'rsqrt' or 'constant'.
  end_learning_rate_fraction: float = 0.1  # Final LR / peak (cosine, linear).
  weight_decay: float = 0.01  # Decoupled weight decay (AdamW).
  b1: float = 0.9  # Adam beta1.
  b2: float = 0.98  # Adam beta2.
  eps: float = 1e-9  # Adam epsilon.
  clip_norm: float = 1.0  # Global gradient-norm clipping; 0 disables.


def schedule(config: OptimizerConfig, total_steps: int) -> optax.Schedule:
  """The learning-rate schedule over `total_steps` updates."""
  peak = config.learning_rate
  warmup = max(int(config.warmup_steps), 0)
  rest = max(total_steps - warmup, 1)
  end = peak * config.end_learning_rate_fraction
  if config.decay == 'cosine':
    decay = optax.cosine_decay_schedule(peak, rest, alpha=config.end_learning_rate_fraction)
  elif config.decay == 'linear':
    decay = optax.linear_schedule(peak, end, rest)
  elif config.decay == 'rsqrt':
    scale = max(warmup, 1) ** 0.5
    decay = lambda step: peak * scale / (step + max(warmup, 1)) ** 0.5  # noqa: E731
  elif config.decay == 'constant':
    decay = optax.constant_schedule(peak)
  else:
    raise ValueError(
      f"OptimizerConfig.decay={config.decay!r}: use 'cosine', 'linear', 'rsqrt' or 'constant'."
    )
  if warmup == 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def make(config: OptimizerConfig, total_steps: int) -> optax.GradientTransformation:
  """AdamW (+ gradient clipping) with `schedule(config, total_steps)`."""
  adamw = optax.adamw(
    schedule(config, total_steps),
    b1=config.b1,
    b2=config.b2,
    eps=config.eps,
    weight_decay=config.weight_decay,
    # Decay matrices only: not RMSNorm scales (1-D), as is usual for Transformers.
    mask=lambda params: jax.tree.map(lambda p: p.ndim > 1, params),
  )
  if config.clip_norm and config.clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(config.clip_norm), adamw)
  return adamw
