"""The iot-data Publish API delivered to the sandbox broker's subscribers.

moto records a published message and delivers it nowhere. Here it also goes to SINK (the
fleet-provisioning service's `publish`, set when the service starts), which hands it to the broker,
so a function answering a device over MQTT (the certificate-rotation function) reaches it.
Topics and QoS are read as AWS reads them (the path after /topics/, the qos query parameter, 0 by
default). Delete when moto can hand a published message to a broker.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from urllib.parse import unquote

from moto.iotdata.responses import IoTDataPlaneResponse

SINK: Callable[[str, bytes, int], None] | None = None


def install() -> None:
    if getattr(IoTDataPlaneResponse.publish, "_sandbox_broker", False):
        return

    def publish(self: IoTDataPlaneResponse) -> str:
        topic = self.path.split("/topics/")[-1].split("?")[0]
        topic = unquote(topic)
        qos = str((self.querystring.get("qos") or ["0"])[0])
        if qos not in ("0", "1"):
            from moto.core.exceptions import JsonRESTError

            raise JsonRESTError("InvalidRequestException", "qos must be 0 or 1")
        body = self.body if isinstance(self.body, bytes) else str(self.body or "").encode()
        self.iotdata_backend.publish(topic=topic, payload=body)
        if SINK is not None:
            SINK(topic, body, int(qos))
        return json.dumps({})

    publish._sandbox_broker = True  # type: ignore[attr-defined]
    IoTDataPlaneResponse.publish = publish
