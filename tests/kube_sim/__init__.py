"""A simulated k3s cluster: a real Kubernetes API over HTTP for tests and the demo."""
