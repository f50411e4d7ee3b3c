"""Adapters for external tools: the only place that starts subprocesses.

One module per tool (docker, git, trivy, hadolint, helm, kubectl, registry, compose, skopeo).
Each call has a timeout, argv lists only, credentials through stdin or the environment.
"""
