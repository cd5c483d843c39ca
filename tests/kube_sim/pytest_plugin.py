"""pytest fixtures for the simulated cluster (filled in with the simulator)."""
