"""This machine: bootstrap, doctor, the test runner."""
