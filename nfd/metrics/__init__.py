"""Evaluation metrics: 3D shape metrics (COV, MMD, 1-NNA on Chamfer distance), a small MNIST classifier FD, and
Inception FID/KID through torch-fidelity when it and its weights are available.

Every metric is a function registered by name in :mod:`nfd.metrics.registry`; ``evaluate(name, **inputs)`` runs it and
returns one record (a plain dict) that ``append_jsonl`` writes as one JSON line. The ``nfd evaluate`` verbs live in
:mod:`nfd.metrics.cli`.
"""

from nfd.metrics.registry import append_jsonl, evaluate, get_metric, list_metrics, register_metric

__all__ = ["append_jsonl", "evaluate", "get_metric", "list_metrics", "register_metric"]
