"""Rendering executed notebooks for people: HTML today (the API and the web UI); the reports
issue adds a sanitised static mode for e-mail on the same renderer (:mod:`kiln.report.render`)."""
