"""What `fleet` (scripts/fleet.py) does to a deployed fleet, as a library (the demo, the simulator and the
tests use it too): manifests, the device registry, the devices' IoT resources, the hook's decisions, claim
certificate generations."""
