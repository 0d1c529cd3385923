"""The acoustic models."""
