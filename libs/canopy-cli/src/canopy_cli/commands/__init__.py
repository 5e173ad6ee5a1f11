"""The command groups of `canopy`; importing one registers its commands on the root app."""
