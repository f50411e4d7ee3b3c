"""The runner that chains stages, the run report, promotion."""
