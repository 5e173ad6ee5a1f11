"""The canopy command line and the make-run demo."""
