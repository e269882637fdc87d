"""Running a stage on hardware: backend, devices, precision, hosts, training loop."""
