"""Composition package: settings, CLI, process wiring and the embedded services."""
