"""Evaluation of saved anomaly maps: metrics, plots, the per-class evaluation and the all-class table."""
