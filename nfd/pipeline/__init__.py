"""The pipeline: one plan of every job, derived from ``params.yaml``, that Snakemake and DVC both run.

Modules: ``plan`` (the jobs, and the lookups the Snakemake rules use), ``dvc`` (``dvc.yaml`` written from the plan,
and its staleness check) and ``cli`` (``nfd pipeline``).
"""

from nfd.pipeline.plan import SCHEMA, Plan, Stage, load_params, validate_params

__all__ = ["SCHEMA", "Plan", "Stage", "load_params", "validate_params"]
