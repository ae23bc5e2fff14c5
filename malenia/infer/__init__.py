"""Sliding-window prediction, lesion extraction, attribute matching, outputs and reports."""
