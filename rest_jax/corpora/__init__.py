"""Corpora shipped inside the package; `rest_jax.tasks` finds them beside this file."""
