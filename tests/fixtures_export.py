"""Fixtures for the export tests."""
