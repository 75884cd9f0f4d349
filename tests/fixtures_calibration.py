"""Fixtures for the calibration tests."""
