"""Workflow helpers: the config schema, stage specs, the run plan and Snakemake profiles."""
