"""The broker plugin: its C source (fleet_routing.c) and how it is built (build.py)."""
