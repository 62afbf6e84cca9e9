"""The pre-provisioning hook's own module, imported from its Lambda folder: the rules a device's
RegisterThing parameters must pass and the reason codes the hook logs. The tools validate and explain
with the hook's code itself, so they can never accept what the hook refuses (or the reverse)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import ModuleType

HOOK_DIR = Path(__file__).resolve().parents[2] / "lambda" / "provisioning_hook"


def load() -> ModuleType:
    if str(HOOK_DIR) not in sys.path:
        sys.path.insert(0, str(HOOK_DIR))
    # The hook builds its DynamoDB client at import, as Lambda runs it; boto3 needs a region for that
    # (any: the tools never use that client).
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    import provisioning_hook

    return provisioning_hook


hook = load()
