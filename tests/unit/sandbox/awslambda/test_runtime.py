"""Functions run as Lambda runs them (sandbox/awslambda/runtime.py): warm workers, errors and
timeouts as Lambda reports them, a changed configuration's workers stopped."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from sandbox.awslambda import runtime as lambda_runtime
from tests.unit.sandbox.support import execution_role, function


@pytest.fixture
def local_pool(tmp_path: Path) -> Iterator[lambda_runtime.WorkerPool]:
    pool = lambda_runtime.WorkerPool(tmp_path, "http://127.0.0.1:9")  # nothing listens: no AWS calls expected
    original = lambda_runtime.LambdaFunction._invoke_lambda
    lambda_runtime.install(pool)
    yield pool
    pool.stop()
    lambda_runtime.LambdaFunction._invoke_lambda = original  # type: ignore[method-assign]


def invoke(name: str, event: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    response = boto3.client("lambda", region_name="us-east-1").invoke(
        FunctionName=name, Payload=json.dumps(event).encode(), LogType="Tail"
    )
    return response, json.loads(response["Payload"].read())


def test_local_lambda_runs_the_handler_warm_with_its_environment(
    iot: Any, local_pool: lambda_runtime.WorkerPool
) -> None:
    code = (
        "import os\nCOLD = []\n"
        "def handler(event, context):\n"
        "    COLD.append(1)\n    print('handled', event['n'])\n"
        "    return {'n': event['n'], 'invocations': len(COLD), 'table': os.environ['TABLE_NAME'],\n"
        "            'endpoint': os.environ['AWS_ENDPOINT_URL']}\n"
    )
    function("echo", code, env={"TABLE_NAME": "registry"})

    _, first = invoke("echo", {"n": 1})
    _, second = invoke("echo", {"n": 2})

    assert first == {"n": 1, "invocations": 1, "table": "registry", "endpoint": "http://127.0.0.1:9"}
    assert second["invocations"] == 2  # the same warm worker: imported once
    events = boto3.client("logs", region_name="us-east-1").filter_log_events(logGroupName="/aws/lambda/echo")
    assert any("handled 2" in e["message"] for e in events["events"])


def test_a_function_imports_its_own_files_first_and_they_never_replace_the_worker(
    iot: Any, local_pool: lambda_runtime.WorkerPool
) -> None:
    """As in Lambda, the function's code (LAMBDA_TASK_ROOT, its working directory) is first on its path: its
    own modules win. The worker that runs it is loaded before that, so a package of the function's named
    like the sandbox's (here one that cannot be imported) changes nothing about how it is run."""
    code = (
        "import os, helper\n"
        "def handler(event, context):\n"
        "    return [helper.VALUE, os.getcwd() == os.environ['LAMBDA_TASK_ROOT']]\n"
    )
    files = {"helper.py": "VALUE = 'its own'\n", "sandbox/__init__.py": "raise ImportError('not the worker')\n"}
    function("layered", code, files=files)

    response, answer = invoke("layered", {})

    assert "FunctionError" not in response, answer
    assert answer == ["its own", True]


def test_local_lambda_reports_errors_and_timeouts_as_lambda_does(
    iot: Any, local_pool: lambda_runtime.WorkerPool
) -> None:
    function("broken", "def handler(event, context):\n    raise ValueError('no')\n")
    function("slow", "import time\ndef handler(event, context):\n    time.sleep(30)\n", timeout=1)

    response, error = invoke("broken", {})
    assert response["FunctionError"] and error["errorType"] == "ValueError" and error["errorMessage"] == "no"
    response, timed_out = invoke("slow", {})
    assert response["FunctionError"] and "timed out after 1.00 seconds" in timed_out["errorMessage"]


def test_a_changed_configuration_stops_the_old_configurations_workers(
    iot: Any, local_pool: lambda_runtime.WorkerPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A role change (or code, environment) makes a new configuration with workers of its own; the old
    one's idle workers stop at the function's next invocation, and a busy one when it finishes."""
    started: list[lambda_runtime.Worker] = []
    worker_class = lambda_runtime.Worker

    class Recorded(worker_class):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            started.append(self)

    monkeypatch.setattr(lambda_runtime, "Worker", Recorded)
    code = "import time\ndef handler(event, context):\n    time.sleep(event.get('sleep', 0))\n    return event\n"
    function("echo", code)
    lam = boto3.client("lambda", region_name="us-east-1")
    invoke("echo", {"n": 1})
    (first,) = started

    lam.update_function_configuration(FunctionName="echo", Role=execution_role("echo-role-2"))
    invoke("echo", {"n": 2})

    assert len(started) == 2 and not first.alive()  # the old idle worker is stopped, not kept
    busy = threading.Thread(target=invoke, args=("echo", {"sleep": 1.5}))
    busy.start()
    time.sleep(0.5)  # the second configuration's worker is busy now
    lam.update_function_configuration(FunctionName="echo", Environment={"Variables": {"CHANGED": "1"}})
    invoke("echo", {"n": 3})
    busy.join(10)

    assert len(started) == 3 and not started[1].alive()  # stopped when it finished, not put back idle
    assert [worker.alive() for worker in started] == [False, False, True]
    assert sum(len(idle) for idle in local_pool._idle.values()) == 1


def test_workers_are_forked_warm_with_boto3_reading_the_functions_own_environment(
    iot: Any, local_pool: lambda_runtime.WorkerPool
) -> None:
    """A worker is forked from the warm-start process, which has imported boto3 and read its models: the
    function finds boto3 imported when its module loads, and its clients take the Region, endpoint and
    credentials of the function's own environment, not the warm-start process's."""
    code = (
        "import os, sys\nWARM = 'botocore.client' in sys.modules\nimport boto3\n"
        "def handler(event, context):\n"
        "    client = boto3.client('dynamodb')\n"
        "    credentials = boto3.Session().get_credentials()\n"
        "    return {'warm': WARM, 'region': client.meta.region_name, 'endpoint': client.meta.endpoint_url,\n"
        "            'key': credentials.access_key, 'expected_key': os.environ['AWS_ACCESS_KEY_ID'],\n"
        "            'pid': os.getpid()}\n"
    )
    function("warm", code)

    response, answer = invoke("warm", {})

    assert "FunctionError" not in response, answer
    assert answer["warm"] is True
    assert answer["region"] == "us-east-1" and answer["endpoint"] == "http://127.0.0.1:9"
    assert answer["key"] == answer["expected_key"] and answer["key"] != "warm-start"
    assert local_pool.warm_start.failure == ""


def test_a_function_that_bundles_boto3_gets_its_own_and_a_dead_worker_is_replaced(
    iot: Any, local_pool: lambda_runtime.WorkerPool
) -> None:
    """Lambda imports a boto3 the function's code bundles: such a function is started as a new process,
    not forked (a fork would hand it the warm-start process's). A worker that dies between invocations
    is noticed and replaced."""
    bundled = "import boto3\ndef handler(event, context):\n    return boto3.WHOSE\n"
    function("bundled", bundled, files={"boto3/__init__.py": "WHOSE = 'its own'\n"})
    # botocore's own imports count too, as a module file as well as a package
    function(
        "own-urllib3",
        "import urllib3\ndef handler(event, context):\n    return urllib3.WHOSE\n",
        files={"urllib3.py": "WHOSE = 'its own'\n"},
    )
    # what Python reads only when it starts: PYTHONPATH (a new process honours it) and TZ
    function(
        "with-path",
        "import helper, time\ndef handler(event, context):\n    return [helper.VALUE, time.tzname[0]]\n",
        files={"lib/helper.py": "VALUE = 'from PYTHONPATH'\n"},
        env={"PYTHONPATH": "lib", "TZ": "UTC"},
    )
    function("plain", "import os\ndef handler(event, context):\n    return os.getpid()\n")

    assert invoke("bundled", {})[1] == "its own"
    assert invoke("own-urllib3", {})[1] == "its own"
    assert invoke("with-path", {})[1] == ["from PYTHONPATH", "UTC"]
    _, pid = invoke("plain", {})
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    response, again = invoke("plain", {})
    assert "FunctionError" not in response and again != pid
