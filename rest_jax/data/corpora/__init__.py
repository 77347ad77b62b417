"""Corpora shipped inside the package (`rest_jax.data.tasks` finds them beside this file) and
`corpus_files`, which reads corpus files and carves their splits."""
