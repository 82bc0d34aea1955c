"""Acquisition functions (samplers) and active-learning protocols."""
