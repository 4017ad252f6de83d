"""motlab's test suite (a package, so that ``python -m tests.hubserver`` finds it first)."""
