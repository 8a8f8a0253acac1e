"""The pilot: registers a machine's resources, pulls jobs that fit, runs them, reports back."""
