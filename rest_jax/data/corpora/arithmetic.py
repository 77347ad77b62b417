"""A generated verifiable task: multi-step integer arithmetic with worked solutions.

Each problem is a chain of additions and subtractions of small integers; its
worked solution evaluates left to right, one step per operation, and ends with
the final answer, which `verifiers.FinalAnswer` checks exactly:

    prompt:   "7+12-5="
    solution: "7+12=19, 19-5=14. Answer: 14"
    answer:   "14"

The train split (the BC data and the prompts Grow samples) has 1 to 3
operations (`TRAIN_OPS`); validation and test hold the hardest kind, 3
operations (`HELD_OUT_OPS`), with prompts that are not in train. (Held-out
problems longer than any in train measure length generalization instead: a
CPU-sized LM trained on 1-3 operations stops after 3 steps on 4-operation
problems, and ReST-EM, which samples train prompts, cannot change that.) Everything is a
function of the seed, so the command below rebuilds the shipped files
byte for byte (with the same sentencepiece version for the vocabulary):

    python -m rest_jax.data.corpora.arithmetic --out_dir=rest_jax/data/corpora/arithmetic

`tasks.arithmetic()` is the task over the shipped files.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random

TRAIN_OPS = (1, 2, 3)  # Operations per train problem (uniform).
HELD_OUT_OPS = (3,)  # Operations per validation / test problem.
MAX_OPERAND = 20  # Operands are 1..MAX_OPERAND.
SIZES = {'train': 20000, 'validation': 500, 'test': 1000}
VOCAB_SIZE = 27  # Characters and specials (one merge): a digit is a token.
SEED = 0


def problem(rng: random.Random, num_ops: int, max_operand: int = MAX_OPERAND) -> dict:
  """One problem with `num_ops` operations: {'prompt', 'solution', 'answer'} strings."""
  value = rng.randint(1, max_operand)
  prompt, steps = str(value), []
  for _ in range(num_ops):
    op, operand = rng.choice('+-'), rng.randint(1, max_operand)
    result = value + operand if op == '+' else value - operand
    steps.append(f'{value}{op}{operand}={result}')
    prompt += f'{op}{operand}'
    value = result
  return {
    'prompt': f'{prompt}=',
    'solution': f'{", ".join(steps)}. Answer: {value}',
    'answer': str(value),
  }


def generate(seed: int = SEED, sizes: dict[str, int] | None = None) -> dict[str, list[dict]]:
  """The three splits, deterministic in `seed`; held-out prompts are never in train.

  Returns:
    {'train'|'validation'|'test': [problem dict, ...]}, distinct prompts per split.
  """
  sizes = SIZES if sizes is None else sizes
  rng = random.Random(seed)
  seen: set[str] = set()
  out = {}
  for split in ('validation', 'test', 'train'):  # Held-out first: train avoids their prompts.
    ops = HELD_OUT_OPS if split != 'train' else TRAIN_OPS
    rows = []
    while len(rows) < sizes[split]:
      row = problem(rng, rng.choice(ops))
      if row['prompt'] not in seen:
        seen.add(row['prompt'])
        rows.append(row)
    out[split] = rows
  return {split: out[split] for split in ('train', 'validation', 'test')}


def write(out_dir: str, seed: int = SEED) -> dict[str, str]:
  """Writes `<split>.jsonl.gz` and `spm.model` (trained on train) into `out_dir`.

  Returns:
    {'train'|'validation'|'test'|'vocab': path}.
  """
  from rest_jax.data import vocabularies  # TensorFlow: only when building files.

  os.makedirs(out_dir, exist_ok=True)
  paths = {}
  splits = generate(seed)
  for split, rows in splits.items():
    path = os.path.join(out_dir, f'{split}.jsonl.gz')
    text = ''.join(json.dumps(row, sort_keys=True) + '\n' for row in rows)
    with open(path, 'wb') as f:  # mtime 0: the same bytes on every rebuild.
      f.write(gzip.compress(text.encode('utf-8'), mtime=0))
    paths[split] = path
  sentences = [t for row in splits['train'] for t in (row['prompt'], row['solution'])]
  paths['vocab'] = vocabularies.train_sentencepiece(
    sentences, os.path.join(out_dir, 'spm.model'), VOCAB_SIZE
  )
  return paths


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out_dir', required=True, help='Folder for the split files and spm.model.')
  parser.add_argument('--seed', type=int, default=SEED, help='Generator seed.')
  args = parser.parse_args()
  for name, path in write(args.out_dir, args.seed).items():
    print(f'{name}: {path}')


if __name__ == '__main__':
  main()
