"""Developer tools of the checkout, run from the repository root (`python -m tools.<name>`); not installed
with alod: tests, benchmarks and the Makefile use them."""
