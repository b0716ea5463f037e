"""Benchmarks for cfaccess_mw: the floor, the crypto floor, end to end, the peers, JWKS and memory.

Run ``benchmarks/run.sh`` (or ``python -m benchmarks.run`` in a venv that has the project); see README.md here.
"""
