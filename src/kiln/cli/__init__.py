"""The ``kiln`` command line: one module per command, :mod:`kiln.cli.main` dispatches."""
