#!/usr/bin/env python
"""The device command users know: `python3 scripts/test_provisioning.py --serial-number ...` (with the
project's venv Python: `pipenv run python ...`) provisions one device by claim, and `... rotate` trades its
certificate for a new one. The device client itself is scripts/device_client.py (`--help` says the same
here and there)."""

from scripts.device_client import run

if __name__ == "__main__":
    run()
