"""Tiling and embedding: spot geometry, the encoder registry, the embedding engine, the feature store."""
