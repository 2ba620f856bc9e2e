"""Losses and metrics per task, as free functions."""
