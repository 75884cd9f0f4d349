"""Fixtures for the models tests."""
