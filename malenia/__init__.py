"""Malenia: open-set lesion segmentation for CT with lesion attribute matching."""

__version__ = "0.1.0"
