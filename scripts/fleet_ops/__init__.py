"""What `scripts/fleet.py` does to a deployed fleet, as a library (the demo, the simulator and the tests
use it too): manifests, the device registry, the devices' IoT resources, the hook's decisions, claim
certificate generations."""

import sys
from pathlib import Path

# The registry's layout is the stack's own (iot_fleet.registry_schema, in constructs/; as main.py does,
# the folder goes on the path, never imported itself: it would shadow the `constructs` library).
_CONSTRUCTS = str(Path(__file__).resolve().parents[2] / "constructs")
if _CONSTRUCTS not in sys.path:
    sys.path.insert(0, _CONSTRUCTS)
