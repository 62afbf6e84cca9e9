"""Shared test settings: no test may reach real AWS."""

import os
from typing import Any

# Credentials for moto; any real AWS call would fail on these.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.pop("AWS_PROFILE", None)

# Figures tests measured (checkov counts, deploy timings), printed after pytest's summary.
SUMMARY: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in SUMMARY:
        terminalreporter.write_line(line)
    seed = terminalreporter.config.getoption("randomly_seed", None)
    if seed is not None:  # tests run in random order (pytest-randomly): this order again with the seed
        terminalreporter.write_line(f"test order: random; to repeat it: pytest --randomly-seed={seed}")
