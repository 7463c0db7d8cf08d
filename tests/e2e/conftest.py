"""Fixtures of the end-to-end tests: the service as `casestudies serve` runs it."""
from tests.e2e.test_served import served  # noqa: F401 (a fixture, shared by the modules here)
