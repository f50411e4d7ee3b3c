"""The pipeline's stages: build, scan, smoke, push, deploy, verify, each one module."""
