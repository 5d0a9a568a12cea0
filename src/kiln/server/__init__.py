"""``kiln serve``: the REST API, notebook endpoints, accounts, the audit log and metrics.

The modules that need the server's packages (FastAPI, uvicorn, argon2, prometheus-client,
nbconvert: ``pip install 'kiln-notebooks[server]'``) are imported only by ``kiln serve`` and
the account commands; :mod:`kiln.server.client` (``kiln --server URL``) needs none of them.

- :mod:`~kiln.server.app` builds the app; :mod:`~kiln.server.supervisor` runs it with its
  worker processes; :mod:`~kiln.server.settings` says what is served and how;
- :mod:`~kiln.server.runs_api`, :mod:`~kiln.server.accounts_api`,
  :mod:`~kiln.server.endpoints`: the routes;
- :mod:`~kiln.server.auth`, :mod:`~kiln.server.accounts`, :mod:`~kiln.server.auditlog`: who
  may do what, and the record of what they did;
- :mod:`~kiln.server.errors`: Kiln's errors as HTTP statuses, in one place.
"""
