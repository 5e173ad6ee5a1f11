"""Canopy permissions service."""
