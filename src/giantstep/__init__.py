"""giantstep: what a two-layer network learns from giant gradient steps."""
