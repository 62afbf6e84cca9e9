"""The sandbox's local AWS process: moto server plus the extensions that stand in for what it lacks.

Run by ``python -m sandbox up``; not meant to be started by hand.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import threading
from pathlib import Path

os.environ.setdefault("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")  # before moto is imported


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--mqtt-port", type=int, required=True)
    parser.add_argument("--region", default="us-east-1")
    args = parser.parse_args()

    from sandbox import (
        local_lambda,
        moto_atomic_dynamodb_writes,
        moto_idempotent_lambda_permissions,
        moto_indexed_iot_lookups,
        moto_iot_certificates_from_sandbox_ca,
        moto_missing_iot_apis,
        moto_parsed_update_expressions,
        moto_thread_safe_iot_registry,
    )
    from sandbox.certificate_authority import CertificateAuthority

    endpoint = f"http://127.0.0.1:{args.port}"
    moto_missing_iot_apis.install()
    authority = CertificateAuthority.load_or_create(args.state_dir / "ca")
    moto_iot_certificates_from_sandbox_ca.install(authority)
    moto_atomic_dynamodb_writes.install()
    moto_parsed_update_expressions.install()
    moto_idempotent_lambda_permissions.install()
    moto_indexed_iot_lookups.install()
    moto_thread_safe_iot_registry.install()
    pool = local_lambda.WorkerPool(args.state_dir, endpoint)
    local_lambda.install(pool)

    from sandbox.http_server import serve

    server = serve(args.port)
    from sandbox.data_plane import Broker
    from sandbox.fleet_provisioning import FleetProvisioningService
    from sandbox.local_account import LocalAccount, RegistryWrites

    broker = Broker(args.state_dir, args.mqtt_port, authority)
    broker.prepare()
    broker.start()
    RegistryWrites.install()
    service = FleetProvisioningService(LocalAccount(args.region), broker)
    service.start()
    # The local AWS keeps every resource in memory; with thousands of devices registered, the
    # collector's walks over that heap showed up in every profile of a fleet run. Collect young
    # garbage less often, and never rescan what start-up made (moto's modules and models).
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    print(f"sandbox: local AWS on {endpoint}, MQTT (mTLS) on 127.0.0.1:{args.mqtt_port}", flush=True)
    stopping.wait()
    service.stop()
    broker.stop()
    pool.stop()
    server.shutdown()


if __name__ == "__main__":
    main()
