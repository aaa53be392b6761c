"""Trainable networks on cached features: Gene-DML (``genedml``) and TRIPLEX-style (``triplex``).

``blocks`` (attention, transformer layers), ``encoders`` (neighbour and global encoders), ``pathway``
(the shared image pathway), ``genedml`` and ``triplex`` (the networks), ``losses``, ``presets`` (sizes,
loss presets, ablation variants).
"""
