"""Metrics at a threshold, intervals, threshold rules and per-breast / per-patient aggregation.

Pure NumPy, pandas and scikit-learn over (labels, probabilities): no model, no file.
"""
