"""Shared test settings: no test may reach real AWS; how `make test` spreads tests over two workers."""

import json
import os
from typing import Any

import pytest

# Credentials for moto; any real AWS call would fail on these.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.pop("AWS_PROFILE", None)

# Figures tests measured (checkov counts, deploy timings), printed after pytest's summary.
SUMMARY: list[str] = []


# `make test` runs two pytest-xdist workers (--dist loadgroup). Tests that share an expensive session
# or module fixture stay on one worker, so it is built once: the synth, the session's sandbox
# deployment, and each deployment of its own (a test module's fixture named here).
OWN_DEPLOYMENTS = {"lifecycle": "lifecycle", "destroyed": "lifecycle", "s3_stack": "s3-state", "small": "adoption"}


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        owned = sorted({OWN_DEPLOYMENTS[name] for name in names & OWN_DEPLOYMENTS.keys()})
        if owned:
            group = f"sandbox-{owned[0]}"
        elif item.get_closest_marker("own_sandbox"):  # a deployment inside the test: either worker
            group = f"sandbox-{item.name}"
        elif item.get_closest_marker("integration"):
            group = "sandbox-session"
        elif item.get_closest_marker("infra"):
            group = "synth"
        else:
            continue
        item.add_marker(pytest.mark.xdist_group(group))


def pytest_sessionfinish(session: pytest.Session) -> None:
    output = getattr(session.config, "workeroutput", None)
    if output is not None:  # an xdist worker: its figures go to the controller, which prints them
        output["summary"] = json.dumps(SUMMARY)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    SUMMARY.extend(json.loads(getattr(node, "workeroutput", {}).get("summary", "[]")))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in SUMMARY:
        terminalreporter.write_line(line)
    seed = terminalreporter.config.getoption("randomly_seed", None)
    if seed is not None:  # tests run in random order (pytest-randomly): this order again with the seed
        terminalreporter.write_line(f"test order: random; to repeat it: pytest --randomly-seed={seed}")
