"""Shared runtime for every Canopy service."""
