#!/usr/bin/env python
"""The device command users know: `python3 scripts/test_provisioning.py --serial-number ...` provisions one
device by claim, and `... rotate` trades its certificate for a new one. The device client itself is
scripts/device_client.py (`--help` says the same here and there)."""

import os
import sys

from scripts.device_client import main

if __name__ == "__main__":
    os.umask(0o077)  # the keys and certificates it writes are the device's own
    sys.exit(main())
