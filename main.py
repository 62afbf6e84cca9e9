#!/usr/bin/env python
"""cdktf app: synthesizes the IoT fleet-provisioning stack from cdktf.json context and env overrides."""

import os
import sys
from pathlib import Path

from iot_fleet.config import ConfigError, load_config, read_context

# jsii prints a banner about the Node.js release on every run; the Makefile sets the same.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

HERE = Path(__file__).resolve().parent


def main() -> int:
    try:
        config = load_config(read_context(HERE / "cdktf.json"), base_dir=HERE)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    # Imported only once the config is valid: the provider bindings take seconds to load.
    from cdktf import App

    from iot_fleet.stack import IotProvisioningStack

    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    app = App()
    try:
        IotProvisioningStack(app, config.stack_name, config)
    except ConfigError as error:  # a claim key in the factory folder that cannot be used
        print(f"error: {error}", file=sys.stderr)
        return 2
    app.synth()
    return 0


if __name__ == "__main__":
    sys.exit(main())
