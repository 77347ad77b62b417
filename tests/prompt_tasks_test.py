"""Prompt -> completion tasks: JSONL/TSV files, and the generated arithmetic task."""

import json

import pytest

from rest_jax import errors
from rest_jax.data import tasks
from rest_jax.data.corpora import arithmetic
from rest_jax.rewards import verifiers


def test_generator_is_deterministic_held_out_and_verifiable():
  sizes = {'train': 300, 'validation': 40, 'test': 40}
  a, b = arithmetic.generate(0, sizes), arithmetic.generate(0, sizes)
  assert a == b and arithmetic.generate(1, sizes) != a
  train = {row['prompt'] for row in a['train']}
  for split in ('validation', 'test'):
    assert not train & {row['prompt'] for row in a[split]}
    assert {row['prompt'].count('+') + row['prompt'].count('-') for row in a[split]} == {3}
  for row in a['train'][:50]:
    # The worked solution's last step is the prompt evaluated left to right.
    assert str(eval(row['prompt'][:-1])) == row['answer']  # noqa: S307 (digits and +/-)
    assert verifiers.extract_answer(row['solution']) == row['answer']


def test_shipped_arithmetic_task_reads_and_tokenizes():
  task = tasks.arithmetic()
  splits = task.splits()
  assert {k: len(v) for k, v in splits.items()} == {'train': 20000, 'validation': 500, 'test': 1000}
  prompt, solution = splits['test'][0]
  assert prompt.endswith('=') and 'Answer:' in solution
  vocab = tasks.get_vocabulary(task)
  assert vocab.vocab_size == arithmetic.VOCAB_SIZE
  assert vocab.decode(vocab.encode(solution)) == solution
  batch = next(
    tasks.get_dataset(
      task,
      'validation',
      input_length=18,
      target_length=60,
      batch_size=4,
      shuffle=False,
      seed=0,
      repeat=False,
      with_text=True,
    )
  )
  assert batch['encoder_input_tokens'].shape == (4, 18)
  assert batch['decoder_target_tokens'].shape == (4, 60)


def test_prompt_completion_from_jsonl_and_tsv(tmp_path):
  rows = [
    {'prompt': f'{i}+1=', 'answer': str(i + 1), 'solution': f'{i}+1={i + 1}. Answer: {i + 1}'}
    for i in range(30)
  ]
  rows[3].pop('solution')  # No worked solution: the answer is the target.
  jsonl = tmp_path / 'p.jsonl'
  jsonl.write_text(''.join(json.dumps(r) + '\n' for r in rows))
  task = tasks.prompt_completion('pc_jsonl_test', str(jsonl), num_validation=5, num_test=5)
  pairs = dict(p for split in task.splits().values() for p in split)
  assert pairs['0+1='] == '0+1=1. Answer: 1' and pairs['3+1='] == '4'
  tsv = tmp_path / 'p.tsv'
  tsv.write_text(''.join(f'{r["prompt"]}\t{r["answer"]}\tsolved {r["answer"]}\n' for r in rows))
  task = tasks.prompt_completion('pc_tsv_test', str(tsv), num_validation=5, num_test=5)
  pairs = dict(p for split in task.splits().values() for p in split)
  assert pairs['3+1='] == 'solved 4'
  answers_only = tasks.prompt_completion(
    'pc_tsv_answers', str(tsv), target_keys=('answer',), num_validation=5, num_test=5
  )
  assert dict(p for s in answers_only.splits().values() for p in s)['3+1='] == '4'


def test_prompt_completion_bad_line_names_the_file_and_line(tmp_path):
  bad = tmp_path / 'bad.jsonl'
  bad.write_text('{"prompt": "1+1=", "answer": "2"}\n{"question": "x"}\n')
  with pytest.raises(errors.DataError, match=r'bad.jsonl, line 2 .*prompt'):
    tasks.prompt_completion('pc_bad_test', str(bad), num_validation=0, num_test=0).splits()
  bad.write_text('not json\n')
  with pytest.raises(errors.DataError, match='not valid JSON'):
    tasks.prompt_completion('pc_bad_test2', str(bad), num_validation=0, num_test=0).splits()
