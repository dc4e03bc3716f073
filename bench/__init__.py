"""The performance harness of PERFORMANCE.md: `python -m bench` (or `make bench`) runs metrics M1-M8 against the
simulated cluster on loopback, each beside its peer-style baseline measured in the same run.

See `bench/run.py` for the order of the run and `docs/PERFORMANCE.md` for the latest table.
"""
