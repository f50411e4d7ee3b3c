"""`invoke lint`: Dockerfiles, compose, Kubernetes manifests and Helm charts."""
