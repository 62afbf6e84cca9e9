"""The sandbox's local AWS process: moto server plus the extensions that stand in for what it lacks.

Run by ``python -m sandbox up``; not meant to be started by hand.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path

os.environ.setdefault("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")  # before moto is imported


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args()

    from moto.server import ThreadedMotoServer

    from sandbox import (
        local_lambda,
        moto_atomic_dynamodb_writes,
        moto_idempotent_lambda_permissions,
        moto_missing_iot_apis,
    )

    endpoint = f"http://127.0.0.1:{args.port}"
    moto_missing_iot_apis.install()
    moto_atomic_dynamodb_writes.install()
    moto_idempotent_lambda_permissions.install()
    pool = local_lambda.WorkerPool(args.state_dir, endpoint)
    local_lambda.install(pool)

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=args.port, verbose=False)
    server.start()
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    print(f"sandbox: local AWS listening on {endpoint}", flush=True)
    stopping.wait()
    pool.stop()
    server.stop()


if __name__ == "__main__":
    main()
