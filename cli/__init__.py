"""The ``samdeploy`` command line: one subcommand module per pipeline stage (see main.py)."""
