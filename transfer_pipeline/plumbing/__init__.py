"""Pipeline plumbing: params, atomic outputs, locks, dvc.yaml, errors."""
