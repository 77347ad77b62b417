"""Runs: one driver per `--run_mode` (bc, grow, improve, train_rm, eval, infer,
rest, report, inspect, import_t5) and the pieces only drivers share (the ReST
phases, report data and figures, T5 conversion, the shipped pretrained policy).
May import every layer below: data, rewards, core.
"""
