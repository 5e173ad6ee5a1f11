"""Canopy integration service."""
