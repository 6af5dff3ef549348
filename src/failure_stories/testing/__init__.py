"""The pytest plugin shipped with the package (fixtures and scenario.yaml collection)."""
