"""Evaluate step: the champion/challenger gate."""
