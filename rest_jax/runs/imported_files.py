"""The files `--run_mode=import_t5` writes into MODEL_DIR, each atomically.

MODEL_DIR/checkpoints/<name>/best/0/   `write_checkpoint`: Orbax {'params': ...}, step 0
MODEL_DIR/import/spiece.model          `write_vocabulary`: the SentencePiece model
MODEL_DIR/import/model.gin             `write_model_gin` (`reward_model.gin` for a
                                       reward model): the text of `model_gin`
"""

from __future__ import annotations

import os
import shutil

from rest_jax.core import checkpoints, files, network
from rest_jax.runs import hf_files


def write_vocabulary(vocab_source: str, import_dir: str) -> str:
  """Copies the SentencePiece model into `import_dir` (unless it is that file already).

  Args:
    vocab_source: the SentencePiece model to copy.
    import_dir: MODEL_DIR/import, created if missing.

  Returns:
    The copy's path, `import_dir/spiece.model`.
  """
  vocab_path = os.path.join(import_dir, hf_files.VOCAB_FILE)
  os.makedirs(import_dir, exist_ok=True)
  if os.path.abspath(vocab_source) != vocab_path:
    with open(vocab_source, 'rb') as f:
      files.write_bytes(vocab_path, f.read())
  return vocab_path


def write_checkpoint(ckpt_dir: str, params: dict) -> None:
  """Writes `{'params': params}` as step 0 of a fresh checkpoint folder.

  Args:
    ckpt_dir: the checkpoint folder; an existing one is replaced.
    params: the parameter tree (sharded jax arrays).
  """
  if os.path.isdir(ckpt_dir):
    shutil.rmtree(ckpt_dir)
  ckpt = checkpoints.Checkpointer(ckpt_dir, max_to_keep=1)
  ckpt.save(0, {'params': params})
  ckpt.close()


def model_gin(
  cfg: network.T5Config,
  *,
  scope: str = '',
  vocab_path: str,
  checkpoint_dir: str,
  target: str,
  source: str,
) -> str:
  """The gin text of an imported network, in the style of gin/models/*.gin.

  Args:
    cfg: the network config.
    scope: '' for the policy (`network.T5Config`, MODEL_CONFIG), 'rm' for the
      reward model's encoder (`rm/network.T5Config`).
    vocab_path: the copied SentencePiece model (VOCAB_PATH).
    checkpoint_dir: the written checkpoint (IMPORTED_POLICY or IMPORTED_RM).
    target: 'policy' or 'reward_model'.
    source: the Hugging Face checkpoint, for the header.

  Returns:
    The file's text.
  """
  name = 'rm/network.T5Config' if scope == 'rm' else 'network.T5Config'
  lines = [
    f'# The network of {source}, imported by --run_mode=import_t5.',
    '# Include it *after* gin/runs/*.gin, like a gin/models/*.gin file. The task must',
    '# tokenize with VOCAB_PATH, e.g. tasks.ParallelCorpus.vocab_path = %VOCAB_PATH.',
    'from __gin__ import dynamic_registration',
    'from rest_jax.core import network',
    '',
    f'VOCAB_SIZE = {cfg.vocab_size}',
    f'VOCAB_PATH = {vocab_path!r}',
  ]
  if target == 'policy':
    lines += [
      '# The policy checkpoint: INITIAL_POLICY = %IMPORTED_POLICY (ReST),',
      '# INIT_CHECKPOINT = %IMPORTED_POLICY (Improve), CHECKPOINT = %IMPORTED_POLICY (eval).',
      f'IMPORTED_POLICY = {checkpoint_dir!r}',
      '',
      'MODEL_CONFIG = @network.T5Config()',
    ]
  else:
    lines += [
      '# The reward model: the imported encoder and an untrained head.',
      f'IMPORTED_RM = {checkpoint_dir!r}',
      '',
    ]
  lines.append(f'{name}:')
  for field in network.T5Config.__dataclass_fields__:
    value = getattr(cfg, field)
    lines.append(f'  {field} = {"%VOCAB_SIZE" if field == "vocab_size" else repr(value)}')
  return '\n'.join(lines) + '\n'


def write_model_gin(
  import_dir: str,
  cfg: network.T5Config,
  *,
  vocab_path: str,
  checkpoint_dir: str,
  target: str,
  source: str,
) -> str:
  """Writes `model_gin`'s text as `import_dir/model.gin` (`reward_model.gin` for a reward model).

  Args:
    import_dir: MODEL_DIR/import.
    cfg: the network config.
    vocab_path: the copied SentencePiece model (VOCAB_PATH).
    checkpoint_dir: the written checkpoint.
    target: 'policy' or 'reward_model' (the reward model's encoder is scoped 'rm').
    source: the Hugging Face checkpoint, for the header.

  Returns:
    The gin file's path.
  """
  gin_name = 'model.gin' if target == 'policy' else 'reward_model.gin'
  gin_path = os.path.join(import_dir, gin_name)
  text = model_gin(
    cfg,
    scope='' if target == 'policy' else 'rm',
    vocab_path=vocab_path,
    checkpoint_dir=checkpoint_dir,
    target=target,
    source=source,
  )
  files.write_text(gin_path, text)
  return gin_path
