"""Reward sources behind one interface: (sources, candidates, references?) -> Rewards.

Every reward source is a callable

    reward_fn(sources, candidates, references=None) -> Rewards(reward [N], raw [N])

with a `name` and a `needs_references` flag (`RewardFn`). `reward` is float32 in
[0, 1], what Grow stores and Improve filters on (`reward > tau`); `raw` is the
source's own value on its own scale, stored beside it for inspection.

| source          | raw (the source's own scale)                   | reward in [0, 1]        |
|-----------------|------------------------------------------------|-------------------------|
| `SentenceChrF`  | sacrebleu sentence chrF (chrF2), 0-100         | raw / 100               |
| `SentenceBleu`  | sacrebleu sentence BLEU (effective order),     | raw / 100               |
|                 | 0-100                                          |                         |
| `ExactMatch`    | 1.0 if equal (after normalization) else 0.0    | raw                     |
| `Verifier`      | float(fn(source, candidate, reference)), any   | clip(raw, 0, 1)         |
|                 | finite value                                   |                         |
| `Weighted`      | same as reward (components' raw scales differ, | sum(w_i * reward_i) /   |
|                 | so only their rewards are combined)            | sum(w_i)                |
| `Binarized`     | the inner source's normalized reward           | 1[inner > threshold]    |
| `Guarded`       | the inner source's normalized reward           | inner x penalties for   |
|                 |                                                | empty / copied / looped |
|                 |                                                | / too long / too short  |
| `LearnedReward` | the reward model's head: a logit ('sigmoid')   | sigmoid(raw)            |
|                 | or an unbounded regression ('linear')          |                         |

Metric sources (chrF, BLEU, exact match) need references; the learned reward
model and a verifier by default do not. Every source checks that its inputs
have equal lengths and that references are given when it needs them, and stops
with a ValueError (`errors.UserInputError`) naming the source and the row on a
non-finite value.

The classes are frozen dataclasses, bound directly by gin
(`dynamic_registration`); nothing here imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol

import jax
import numpy as np
import sacrebleu
import sentencepiece

from rest_jax import errors
from rest_jax.core import metrics, partitioning
from rest_jax.rewards import reward_model


@dataclasses.dataclass(frozen=True)
class Rewards:
  """Rewards of N candidates.

  Attributes:
    reward: [N] float32 in [0, 1], the normalized reward.
    raw: [N] float32, the source's own value on its own scale.
  """

  reward: np.ndarray
  raw: np.ndarray

  def __post_init__(self):
    reward = np.asarray(self.reward, np.float32)
    raw = np.asarray(self.raw, np.float32)
    if reward.ndim != 1 or reward.shape != raw.shape:
      raise ValueError(f'Rewards: reward {reward.shape} and raw {raw.shape} must be equal [N].')
    bad = np.flatnonzero(~np.isfinite(reward) | ~np.isfinite(raw) | (reward < 0) | (reward > 1))
    if bad.size:
      i = int(bad[0])
      raise errors.UserInputError(
        f'Rewards: row {i} has reward={reward[i]} raw={raw[i]}; rewards must be finite and in '
        f'[0, 1] ({bad.size} bad rows). Fix the reward source that returned them.'
      )
    object.__setattr__(self, 'reward', reward)
    object.__setattr__(self, 'raw', raw)

  def __len__(self) -> int:
    return len(self.reward)


class RewardFn(Protocol):
  """What Grow calls to score candidates.

  Attributes:
    name: a short name, for logs, manifests and error messages.
    needs_references: whether `references` must be given.
  """

  @property
  def name(self) -> str: ...

  @property
  def needs_references(self) -> bool: ...

  def __call__(
    self,
    sources: Sequence[str],
    candidates: Sequence[str],
    references: Sequence[str] | None = None,
  ) -> Rewards:
    """Scores N candidates.

    Args:
      sources: N source texts.
      candidates: N candidate texts (row i translates sources[i]).
      references: N reference texts, or None when `needs_references` is False.

    Returns:
      Rewards with [N] `reward` in [0, 1] and [N] `raw`.

    Raises:
      ValueError: lengths differ, references are missing, or a value is not finite.
    """
    ...


def check_inputs(
  fn: RewardFn,
  sources: Sequence[str],
  candidates: Sequence[str],
  references: Sequence[str] | None,
) -> None:
  """Validates a reward call's inputs.

  Args:
    fn: the reward source (for its `name` and `needs_references`).
    sources: N source texts.
    candidates: N candidate texts.
    references: N references or None.

  Raises:
    ValueError: the lengths differ, or `fn` needs references and got None.
  """
  if len(sources) != len(candidates):
    raise ValueError(
      f'Reward {fn.name!r}: {len(sources)} sources but {len(candidates)} candidates; '
      'they must be aligned row by row.'
    )
  if references is None:
    if fn.needs_references:
      raise ValueError(
        f'Reward {fn.name!r} needs references (it compares each candidate with its '
        'reference) but got references=None.'
      )
  elif len(references) != len(candidates):
    raise ValueError(
      f'Reward {fn.name!r}: {len(candidates)} candidates but {len(references)} references; '
      'they must be aligned row by row.'
    )


def _check_finite(name: str, raw: np.ndarray) -> None:
  bad = np.flatnonzero(~np.isfinite(raw))
  if bad.size:
    i = int(bad[0])
    raise errors.UserInputError(
      f'Reward {name!r} returned a non-finite value ({raw[i]}) for source index {i} '
      f'({bad.size} such rows). Make it return finite numbers (a verifier: map failures to 0; '
      'a learned reward: check or retrain its checkpoint).'
    )


@functools.cache
def _chrf_metric() -> sacrebleu.metrics.CHRF:
  return sacrebleu.metrics.CHRF()


@functools.cache
def _bleu_metric() -> sacrebleu.metrics.BLEU:
  return sacrebleu.metrics.BLEU(effective_order=True)


def _metric_rewards(metric: Any, candidates: Sequence[str], references: Sequence[str]) -> Rewards:
  raw = np.array(
    [metric.sentence_score(str(c), [str(r)]).score for c, r in zip(candidates, references)],
    np.float32,
  )
  return Rewards(reward=np.clip(raw / 100.0, 0.0, 1.0), raw=raw)


@dataclasses.dataclass(frozen=True)
class SentenceChrF:
  """Sentence chrF against the reference (sacrebleu defaults: chrF2, char order 6).

  raw: chrF in 0-100; reward: raw / 100.
  """

  name: str = 'chrf'  # Name in logs and manifests.
  needs_references: ClassVar[bool] = True

  def __call__(
    self,
    sources: Sequence[str],
    candidates: Sequence[str],
    references: Sequence[str] | None = None,
  ) -> Rewards:
    """See `RewardFn.__call__`; `sources` are checked but not read."""
    check_inputs(self, sources, candidates, references)
    return _metric_rewards(_chrf_metric(), candidates, references)


@dataclasses.dataclass(frozen=True)
class SentenceBleu:
  """Sentence BLEU against the reference (sacrebleu, effective order, exp smoothing).

  raw: BLEU in 0-100; reward: raw / 100.
  """

  name: str = 'bleu'  # Name in logs and manifests.
  needs_references: ClassVar[bool] = True

  def __call__(
    self,
    sources: Sequence[str],
    candidates: Sequence[str],
    references: Sequence[str] | None = None,
  ) -> Rewards:
    """See `RewardFn.__call__`; `sources` are checked but not read."""
    check_inputs(self, sources, candidates, references)
    return _metric_rewards(_bleu_metric(), candidates, references)


def normalize_text(text: str) -> str:
  """NFKC, strip, collapse runs of whitespace to one space, casefold."""
  return ' '.join(unicodedata.normalize('NFKC', text).split()).casefold()


@dataclasses.dataclass(frozen=True)
class ExactMatch:
  """1.0 if the candidate equals the reference, else 0.0 (the ReST-EM binary reward).

  raw == reward, in {0.0, 1.0}.
  """

  # Compare `normalize_text` forms (NFKC, stripped, whitespace collapsed,
  # casefolded); False compares the strings exactly.
  normalize: bool = True
  name: str = 'exact_match'  # Name in logs and manifests.
  needs_references: ClassVar[bool] = True

  def __call__(
    self,
    sources: Sequence[str],
    candidates: Sequence[str],
    references: Sequence[str] | None = None,
  ) -> Rewards:
    """See `RewardFn.__call__`; `sources` are checked but not read."""
    check_inputs(self, sources, candidates, references)
    norm = normalize_text if self.normalize else str
    raw = np.array([float(norm(c) == norm(r)) for c, r in zip(candidates, references)], np.float32)
    return Rewards(reward=raw, raw=raw)


@dataclasses.dataclass(frozen=True)
class Verifier:
  """A user function `fn(source, candidate, reference_or_None) -> float | bool`.

  raw: float(fn(...)), any finite value; reward: clip(raw, 0, 1). A non-finite
  raw value raises ValueError naming the source index.
  """

  fn: Callable[[str, str, str | None], float | bool]  # The verifier, called once per row.
  name: str = 'verifier'  # Name in logs, manifests and errors.
  needs_references: bool = False  # Whether `fn` reads the reference (then it is required).

  def __call__(
    self,
    sources: Sequence[str],
    candidates: Sequence[str],
    references: Sequence[str] | None = None,
  ) -> Rewards:
    """See `RewardFn.__call__`; `fn` gets None as reference when none are given."""
    check_inputs(self, sources, candidates, references)
    refs = [None] * len(candidates) if references is None else references
    raw = np.array(
      [float(self.fn(s, c, r)) for s, c, r in zip(sources, candidates, refs)], np.float64
    )
    _check_finite(self.name, raw)
    return Rewards(reward=np.clip(raw, 0.0, 1.0), raw=raw)


@dataclasses.dataclass(frozen=True)
class Weighted:
  """Weighted mean of other rewards: sum(w_i * reward_i) / sum(w_i).

  Combines the components' normalized [0, 1] rewards. `raw` is the same
  weighted mean: the components' raw scales differ (chrF 0-100, logits, ...),
  so mixing them would mean nothing. Components of weight 0 are not called.
  """

  components: Sequence[RewardFn]  # The reward sources to combine.
  weights: Sequence[float]  # One weight >= 0 per component; their sum must be > 0.
  name: str = 'weighted'  # Name in logs, manifests and errors.

  def __post_init__(self):
    components, weights = tuple(self.components), tuple(float(w) for w in self.weights)
    if len(components) != len(weights):
      raise ValueError(
        f'Weighted {self.name!r}: {len(components)} components but {len(weights)} weights.'
      )
    if not components:
      raise ValueError(f'Weighted {self.name!r}: no components.')
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
      raise ValueError(
        f'Weighted {self.name!r}: weights {list(weights)} must be finite and >= 0, '
        'with a positive sum.'
      )
    object.__setattr__(self, 'components', components)
    object.__setattr__(self, 'weights', weights)

  @property
  def needs_references(self) -> bool:
    """True if any component with a positive weight needs references."""
    return any(c.needs_references for c, w in zip(self.components, self.weights) if w > 0)

  def __call__(
    self,
    sources: Sequence[str],
    candidates: Sequence[str],
    references: Sequence[str] | None = None,
  ) -> Rewards:
    """See `RewardFn.__call__`; every component gets the same inputs."""
    check_inputs(self, sources, candidates, references)
    total = np.zeros(len(candidates), np.float64)
    for component, weight in zip(self.components, self.weights):
      if weight > 0:
        total += weight * component(sources, candidates, references).reward.astype(np.float64)
    combined = np.clip(total / sum(self.weights), 0.0, 1.0)
    return Rewards(reward=combined, raw=combined)


@dataclasses.dataclass(frozen=True)
class Binarized:
  """A binary reward from another source: 1[inner.reward > threshold] (ReST-EM).

  ReST-EM labels each sample with a binary reward [PAPER §5]; for translation
  that is, e.g., `Binarized(SentenceChrF(), 0.5)`. raw is the inner source's
  normalized reward, so the manifest keeps the graded value beside the label.
  """

  inner: RewardFn  # The graded reward source.
  threshold: float = 0.5  # reward = 1 where inner's reward is strictly above this.
  name: str = 'binarized'  # Name in logs, manifests and errors.

  def __post_init__(self):
    if not (math.isfinite(self.threshold) and 0.0 <= self.threshold < 1.0):
      raise ValueError(f'Binarized.threshold={self.threshold} must be in [0, 1).')

  @property
  def needs_references(self) -> bool:
    """Whether the inner source needs references."""
    return self.inner.needs_references

  def __call__(
    self,
    sources: Sequence[str],
    candidates: Sequence[str],
    references: Sequence[str] | None = None,
  ) -> Rewards:
    """See `RewardFn.__call__`; the inner source gets the same inputs."""
    check_inputs(self, sources, candidates, references)
    graded = self.inner(sources, candidates, references).reward.astype(np.float64)
    return Rewards(reward=(graded > self.threshold).astype(np.float64), raw=graded)


@dataclasses.dataclass(frozen=True)
class Guarded:
  """Another source's reward times reference-free penalties for known hacks.

  Learned reward models are fooled by patterns a policy finds quickly
  (`corruptions.PROBES`, `metrics.hacking_flags`). The guards look at the
  source and the candidate only, so they apply wherever the reward does:

  * empty candidate, or the source copied (case and spacing ignored): 0;
  * a repeated word 3-gram (`metrics.has_repeated_ngram`): x `penalty`;
  * more than `max_length_ratio` x the source's words + 2: x `penalty`;
  * fewer than `min_length_ratio` x the source's words (rounded down): x `penalty`.

  Penalties multiply. raw is the inner source's normalized reward.
  """

  inner: RewardFn  # The guarded reward source.
  penalty: float = 0.3  # Factor per triggered guard, in [0, 1].
  max_length_ratio: float = 1.6  # Longer than this x source words + 2: penalized.
  min_length_ratio: float = 0.6  # Shorter than floor(this x source words): penalized.
  name: str = 'guarded'  # Name in logs, manifests and errors.

  def __post_init__(self):
    if not 0.0 <= self.penalty <= 1.0:
      raise ValueError(f'Guarded.penalty={self.penalty} must be in [0, 1].')
    if not 0.0 <= self.min_length_ratio < self.max_length_ratio:
      raise ValueError(
        f'Guarded: need 0 <= min_length_ratio ({self.min_length_ratio}) < max_length_ratio '
        f'({self.max_length_ratio}).'
      )

  @property
  def needs_references(self) -> bool:
    """Whether the inner source needs references."""
    return self.inner.needs_references

  def factors(self, sources: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
    """[N] float64: the product of the triggered guards' factors (1 = none)."""
    out = np.ones(len(candidates), np.float64)
    for n, (source, candidate) in enumerate(zip(sources, candidates)):
      src, cand = source.lower().split(), candidate.lower().split()
      if not cand or cand == src:
        out[n] = 0.0
        continue
      if metrics.has_repeated_ngram(candidate):
        out[n] *= self.penalty
      if len(cand) > self.max_length_ratio * len(src) + 2:
        out[n] *= self.penalty
      if len(cand) < math.floor(self.min_length_ratio * len(src)):
        out[n] *= self.penalty
    return out

  def __call__(
    self,
    sources: Sequence[str],
    candidates: Sequence[str],
    references: Sequence[str] | None = None,
  ) -> Rewards:
    """See `RewardFn.__call__`; the inner source gets the same inputs."""
    check_inputs(self, sources, candidates, references)
    inner = self.inner(sources, candidates, references).reward.astype(np.float64)
    return Rewards(reward=inner * self.factors(sources, candidates), raw=inner)


@dataclasses.dataclass(frozen=True)
class _Loaded:
  """What `LearnedReward` loads on first use."""

  sp: sentencepiece.SentencePieceProcessor
  params: Any
  step: int
  mesh: Any
  score_fn: Callable[[Any, jax.Array], tuple[jax.Array, jax.Array]]
  rows: int  # Rows per compiled call: batch_size rounded up to the batch shards.


@dataclasses.dataclass(frozen=True)
class LearnedReward:
  """The learned, reference-free reward model (`reward_model.RewardModel`).

  raw: the model's head output (a logit for output='sigmoid', a regression
  value for 'linear'); reward: sigmoid(raw). The checkpoint and vocabulary are
  loaded on the first call; scoring is jit-compiled once, for `batch_size` rows
  (the last batch is padded), over a data-parallel mesh of this process's
  devices.
  """

  checkpoint_dir: str  # Checkpointer directory of a reward-model TrainState.
  config: reward_model.RewardModelConfig  # The config it was trained with.
  vocab_path: str  # SentencePiece model file (shared with the policy).
  batch_size: int = 256  # Pairs per compiled scoring call.
  step: int | None = None  # Checkpoint step; None for the latest.
  name: str = 'learned_reward'  # Name in logs, manifests and errors.
  needs_references: ClassVar[bool] = False

  def __post_init__(self):
    if self.batch_size < 1:
      raise ValueError(f'LearnedReward.batch_size={self.batch_size}: need at least 1.')

  @functools.cached_property
  def _loaded(self) -> _Loaded:
    # cached_property writes the instance __dict__ directly, so it works on a frozen dataclass.
    sp = sentencepiece.SentencePieceProcessor(model_file=self.vocab_path)
    if sp.get_piece_size() > self.config.encoder.vocab_size:
      raise ValueError(
        f'LearnedReward: the vocabulary {self.vocab_path} has {sp.get_piece_size()} pieces but '
        f'the reward model has vocab_size={self.config.encoder.vocab_size}.'
      )
    mesh = reward_model.local_mesh()
    params, step = reward_model.load_params(self.config, self.checkpoint_dir, self.step, mesh)
    shards = partitioning.num_batch_shards(mesh)
    rows = -(-self.batch_size // shards) * shards
    score_fn = reward_model.jit_score(self.config)
    return _Loaded(sp=sp, params=params, step=step, mesh=mesh, score_fn=score_fn, rows=rows)

  @property
  def checkpoint_step(self) -> int:
    """The step of the loaded checkpoint (loads it if needed)."""
    return self._loaded.step

  def __call__(
    self,
    sources: Sequence[str],
    candidates: Sequence[str],
    references: Sequence[str] | None = None,
  ) -> Rewards:
    """See `RewardFn.__call__`; `references` are checked but not read."""
    check_inputs(self, sources, candidates, references)
    loaded = self._loaded
    cfg = self.config
    tokens = reward_model.encode_pairs(
      loaded.sp,
      sources,
      candidates,
      cfg.max_length,
      eos_id=cfg.encoder.eos_id,
      pad_id=cfg.encoder.pad_id,
    )
    n = len(tokens)
    raw = np.zeros(n, np.float32)
    reward = np.zeros(n, np.float32)
    sharding = partitioning.batch_sharding(loaded.mesh)
    with partitioning.axis_rules(loaded.mesh):
      for start in range(0, n, loaded.rows):
        chunk = tokens[start : start + loaded.rows]
        padded = np.full((loaded.rows, cfg.max_length), cfg.encoder.pad_id, np.int32)
        padded[: len(chunk)] = chunk
        r, p = loaded.score_fn(loaded.params, jax.device_put(padded, sharding))
        raw[start : start + len(chunk)] = np.asarray(r)[: len(chunk)]
        reward[start : start + len(chunk)] = np.asarray(p)[: len(chunk)]
    _check_finite(self.name, raw)
    return Rewards(reward=reward, raw=raw)
