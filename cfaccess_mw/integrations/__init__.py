"""One thin module per framework (and the pure ASGI middleware), each translating its requests and responses
to and from :mod:`cfaccess_mw.core`. Import the one you use (``cfaccess_mw.flask``, ``cfaccess_mw.django``, ...);
this ``__init__`` imports none of them, so no framework is imported that the app did not ask for.
"""
