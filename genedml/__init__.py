"""genedml: spatial gene expression from H&E whole-slide images (Gene-DML and baselines)."""

__version__ = "0.1.0"
