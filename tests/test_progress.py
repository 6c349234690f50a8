"""Progress inside a long run, shown by the CLI."""

from implicitbias.core import progress

# The CLI's display of these reports: tests/test_store_cli.py::test_cli_smoke_run_and_report.


def test_describe_gives_an_eta_only_when_the_end_is_known():
    known = progress.TrainProgress(updates=1000, running=2, runs=4, fitted=4, remaining=500, max_steps=10**6,
                                   seconds=2.0)
    assert known.rate == 500.0 and known.eta_seconds == 1.0  # exact: 1000 / 2 and 500 / 500 are exact in binary
    assert known.describe() == "updates 1,000 (max 1,000,000) · 2/4 training, 4 fitted · 500 updates/s · ETA 1 s"
    fitting = progress.TrainProgress(updates=1000, running=2, runs=4, fitted=1, remaining=None, max_steps=10**6,
                                     seconds=2.0)
    assert fitting.eta_seconds is None and "ETA" not in fitting.describe()
