r"""Rebuilds the shipped SentencePiece model of the Tatoeba English-German corpus.

The model is trained on both sides of the train split only (validation and test
text never shapes the vocabulary), with `vocabularies.train_sentencepiece`: the
same function that trains the vocabulary of any other corpus on first use. The build
is deterministic, so rerunning it reproduces `tatoeba_en_de/spm.model`.

Usage (from the repository root):

  python -m rest_jax.data.corpora.build_vocab [--output=PATH]
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags, logging

from rest_jax.data import tasks, vocabularies

_OUTPUT = flags.DEFINE_string(
  'output', None, 'Where to write the model; default: the shipped tatoeba_en_de/spm.model.'
)


def main(argv: Sequence[str]) -> None:
  """Trains the vocabulary of `tasks.tatoeba_en_de()` on its train split.

  Args:
    argv: command-line arguments; none besides the flags.

  Raises:
    app.UsageError: on extra arguments.
  """
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  corpus = tasks.tatoeba_en_de()
  train = corpus.splits()['train']
  output = _OUTPUT.value or corpus.vocab_path
  sentences = (text for pair in train for text in pair)
  vocabularies.train_sentencepiece(sentences, output, corpus.vocab_size)
  logging.info('Trained on %d train pairs of %s; wrote %s', len(train), corpus.name, output)


if __name__ == '__main__':
  app.run(main)
