"""Experiment configs: `base.py` is shared, every other file is one experiment."""
