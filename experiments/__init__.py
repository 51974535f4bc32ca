"""Thin absl entry points, one per task."""
