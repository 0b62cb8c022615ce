"""Jinja2 prompt templates (data only)."""
