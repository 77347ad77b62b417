"""Install rest_jax: `pip install -e '.[test]'` (see README.md)."""

import os
import shutil

import setuptools
from setuptools.command.build_py import build_py

_HERE = os.path.dirname(os.path.abspath(__file__))


class _BuildPyWithGin(build_py):
  """Also installs the repository's gin/ tree as rest_jax/gin/.

  The repository keeps gin/ at the top level (t5x style, no __init__.py); an
  installed (non-editable) package finds its configs in rest_jax/gin/.
  """

  def run(self):
    super().run()
    target = os.path.join(self.build_lib, 'rest_jax', 'gin')
    shutil.copytree(os.path.join(_HERE, 'gin'), target, dirs_exist_ok=True)


setuptools.setup(
  name='rest_jax',
  version='0.1.0',
  description='Reinforced Self-Training (ReST) of sequence models in JAX, t5x style.',
  long_description=open(os.path.join(_HERE, 'README.md')).read(),
  long_description_content_type='text/markdown',
  license='Apache-2.0',
  python_requires='>=3.11',
  packages=setuptools.find_packages(include=['rest_jax', 'rest_jax.*']),
  package_data={
    'rest_jax.data.corpora': ['tatoeba_en_de/*', 'arithmetic/*'],
    'rest_jax': ['pretrained/*/*'],
  },
  cmdclass={'build_py': _BuildPyWithGin},
  install_requires=[
    'absl-py>=1.4',
    'flax>=0.11',
    'gin-config>=0.5.0',
    'jax>=0.7.1',  # jax.set_mesh
    'matplotlib>=3.7',
    'numpy>=1.26',
    'optax>=0.2.3',
    'orbax-checkpoint>=0.11.0',
    'sacrebleu>=2.4',
    'sentencepiece>=0.2.0',
    'seqio>=0.0.19',
    'tensorboardX>=2.6',
    'tensorflow-text>=2.16',
    'tqdm>=4.66',
  ],
  extras_require={
    'test': [
      'pytest>=8',
      'pytest-xdist>=3.5',
      'ruff>=0.6',
      # tests/t5_import_test.py builds tiny Hugging Face T5 models (CPU torch).
      'torch==2.13.0',
      'transformers>=4.40',
      'safetensors>=0.4',
    ],
    # --run_mode=import_t5 reads model.safetensors (pytorch_model.bin needs torch too).
    'import': ['safetensors>=0.4'],
    'gpu': ['jax[cuda12]>=0.7.1'],
    'tpu': ['jax[tpu]>=0.7.1'],
  },
  entry_points={'console_scripts': ['rest-jax=rest_jax.main:run']},
)
