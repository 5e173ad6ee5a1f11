"""Canopy discovery service."""
