"""Evaluation: the Evaluator and its results, and the results files a run writes."""
