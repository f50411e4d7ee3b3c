"""The embedded local environment: registry, bases, infra, compose stack, cluster, Trivy DB mirror."""
