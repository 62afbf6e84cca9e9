"""moto's IoT registry and device-shadow backends, made safe to call from many threads at once.

moto keeps things, certificates, policies and shadows in plain dictionaries and scans them without
a lock. The sandbox answers HTTP requests on threads and its fleet-provisioning service calls the
same backends in-process, so a thread creating a thing while another looks one up failed with
"OrderedDict mutated during iteration" (seen with ten devices provisioning at once). Every public
method of the two backends runs under one re-entrant lock, as AWS applies each call atomically, and a
listing moto returns as a live view or generator is taken as a list under that lock.
Delete when moto serializes access itself.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import ItemsView, Iterator, KeysView, ValuesView
from typing import Any

from moto.iot.models import IoTBackend
from moto.iotdata.models import IoTDataPlaneBackend

REGISTRY_LOCK = threading.RLock()


def install() -> None:
    """Call after every other IoT backend patch, so the patched methods are the ones serialized."""
    for backend in (IoTBackend, IoTDataPlaneBackend):
        if backend.__dict__.get("_sandbox_serialized", False):
            continue
        for name, original in list(vars(backend).items()):
            if name.startswith("_") or not inspect.isfunction(original):
                continue

            @functools.wraps(original)
            def serialized(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
                with REGISTRY_LOCK:
                    result = __original(self, *args, **kwargs)
                    # moto returns some listings as live views or generators over its dictionaries,
                    # which its HTTP layer walks after this returns: take them while the lock is held.
                    if isinstance(result, (KeysView, ValuesView, ItemsView, Iterator)):
                        return list(result)
                    return result

            setattr(backend, name, serialized)
        backend._sandbox_serialized = True
