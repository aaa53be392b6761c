"""Readers and writers of slides and spatial data: OpenSlide regions, pyramidal TIFFs, the HEST-1k
layout, legacy ST, the dataset registry and sample sheets, and the synthetic demo."""
