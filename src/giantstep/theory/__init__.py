"""Predictions of the papers, computed beside every simulation (see SCIENCE.md §3)."""
