"""The sandbox's local AWS process: moto server plus the extensions that stand in for what it lacks,
the MQTT broker and the fleet-provisioning service.

Run by ``python -m sandbox up``; not meant to be started by hand. It answers
``GET /_sandbox/health`` with each part's state and ``"ready": true`` only once the broker listens
and the fleet-provisioning service is connected and subscribed; a part that cannot start ends the
process with one ``sandbox: error: ...`` line (the last error in its log, which `up` and the
hints quote).
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")  # before moto is imported
# The account's Lambda concurrency, AWS's default (an account may be given less, or more): moto then
# refuses a reservation that leaves fewer than 100 executions unreserved, as AWS does.
os.environ.setdefault("MOTO_LAMBDA_CONCURRENCY_QUOTA", "1000")


class Health:
    """What the health endpoint reports: each part's state, and whether the whole is ready."""

    def __init__(self) -> None:
        self.parts: dict[str, str] = {"local AWS": "starting", "broker": "starting", "fleet service": "starting"}
        self.ready = False
        self.broker: Any = None
        self.service: Any = None

    def report(self) -> dict[str, Any]:
        parts = dict(self.parts)
        if self.broker is not None:
            parts["broker"] = self.broker.failure() or parts["broker"]
        if self.service is not None and self.ready and not self.service.connected:
            parts["fleet service"] = "disconnected from the broker"
        ready = self.ready and all(state in ("up", "subscribed") for state in parts.values())
        report: dict[str, Any] = {"ready": ready, "parts": parts}
        quotas = getattr(self.service, "quotas", None)
        if quotas is not None:  # SandboxQuotas=aws: what `sandbox status` shows
            report["quotas"] = {"rates": dict(quotas.rates), "throttled": dict(quotas.throttled)}
        return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--mqtt-port", type=int, required=True)
    parser.add_argument(
        "--plugin",
        type=Path,
        required=True,
        help="the built broker plugin (broker_plugin.build)",
    )
    parser.add_argument("--region", default="us-east-1")
    args = parser.parse_args()

    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    from sandbox.iot_data_plane.broker import DataPlaneError

    health = Health()
    started: list[Any] = []  # what to stop, in reverse order
    try:
        run(args, health, started)
        print(
            f"sandbox: local AWS on http://127.0.0.1:{args.port}, MQTT (mTLS) on 127.0.0.1:{args.mqtt_port}", flush=True
        )
        stopping.wait()
    except Exception as error:  # noqa: BLE001 - reported as the log's last error, then the process ends
        if not isinstance(error, DataPlaneError):  # an expected failure says what to do; others show where
            traceback.print_exc()
        print(f"sandbox: error: {error}".replace("\n", "\n    "), flush=True)
        code = 1
    else:
        code = 0
    for part in reversed(started):
        try:
            part()
        except Exception:  # noqa: BLE001 - stopping the rest anyway
            traceback.print_exc()
    sys.exit(code)


def run(args: argparse.Namespace, health: Health, started: list[Any]) -> None:
    from datetime import timedelta

    from sandbox import boot
    from sandbox.awslambda.runtime import WorkerPool
    from sandbox.cloudwatch.alarms import AlarmEvaluator
    from sandbox.events.schedules import ScheduleRunner
    from sandbox.iot_data_plane.broker import Broker
    from sandbox.iot_data_plane.certificate_authority import CertificateAuthority
    from sandbox.iot_data_plane.fleet_provisioning import FleetProvisioningService
    from sandbox.iot_data_plane.local_account import LocalAccount
    from sandbox.iot_data_plane.quotas import for_setting
    from sandbox.request_pipeline.http_front import serve
    from sandbox.state import certificate_validity_seconds, clock_scale, quotas

    quota_setting = quotas()  # first: a setting it cannot take fails the start before anything runs
    endpoint = f"http://127.0.0.1:{args.port}"
    authority = CertificateAuthority.load_or_create(args.state_dir / "ca")
    seconds = certificate_validity_seconds()
    if seconds is not None:
        authority.device_validity = timedelta(seconds=seconds)
    pool = WorkerPool(args.state_dir, endpoint)
    started.append(pool.stop)
    boot.install(authority, pool)
    evaluator = AlarmEvaluator(clock_scale())
    evaluator.start()
    started.append(evaluator.stop)
    server = serve(args.port, health.report, authority)
    started.append(server.shutdown)
    health.parts["local AWS"] = "up"
    broker = Broker(args.state_dir, args.mqtt_port, authority, args.plugin)
    broker.prepare()
    broker.start()
    started.append(broker.stop)
    health.broker = broker
    health.parts["broker"] = "up"
    throttle = for_setting(quota_setting)
    service = FleetProvisioningService(LocalAccount(args.region), broker, quotas=throttle)
    print(f"sandbox: fleet-provisioning quotas: {throttle.describe() if throttle else 'none'}", flush=True)
    started.append(service.stop)
    service.start()
    health.service = service
    health.parts["fleet service"] = "subscribed"
    broker.supervise()  # from now on an exit is an interruption: until here it fails `up`
    schedules = ScheduleRunner(LocalAccount(args.region), clock_scale())
    schedules.start()
    started.append(schedules.stop)
    health.ready = True
    # The local AWS keeps every resource in memory; with thousands of devices registered, the
    # collector walks that whole heap again and again during a fleet run. Collect young garbage less
    # often, and never rescan what start-up made (moto's modules and models).
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


if __name__ == "__main__":
    main()
