"""tests/soak holds scripts (python -m tests.soak.run, python -m tests.soak.bad_inputs), not tests: they start the
real app and load it for minutes, so the default `python -m pytest` run never collects anything here."""

collect_ignore_glob = ["*"]
