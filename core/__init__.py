"""Shared pieces of the study: models, LoRA, data, training, evaluation, results, report."""
