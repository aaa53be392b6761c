"""Metrics, per-head evaluation, spatial figures and slide thumbnails."""
