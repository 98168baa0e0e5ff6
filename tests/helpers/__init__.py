"""Code shared by the test files (importable as ``helpers`` through pytest's ``pythonpath``): writers of the
datasets' on-disk formats, config composition and runs, independent reference implementations, small models."""
