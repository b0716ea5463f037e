"""The decision: which credential, verify it, check its claims, the exposure rules, the principal, the refusal.

Nothing here does network I/O or imports a web framework (``tests/test_layout.py`` checks the second):
the key sets and their fetching live in :mod:`cfaccess_mw.keys`, each framework's translation in
:mod:`cfaccess_mw.integrations`. This ``__init__`` imports nothing, so importing one core module
costs only that module and what it needs.
"""
