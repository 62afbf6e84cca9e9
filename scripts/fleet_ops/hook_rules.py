"""The pre-provisioning hook's own module, loaded from its Lambda folder: the rules a device's
RegisterThing parameters must pass and the reason codes the hook logs. The tools validate and explain
with the hook's code itself, so they can never accept what the hook refuses (or the reverse)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

HOOK_FILE = Path(__file__).resolve().parents[2] / "lambda" / "provisioning_hook" / "provisioning_hook.py"
NAME = "provisioning_hook"  # the hook's module name in Lambda, and in the tests that import it


def load() -> ModuleType:
    if NAME in sys.modules:  # one module, whoever loaded it first
        return sys.modules[NAME]
    # The hook builds its DynamoDB client at import, as Lambda runs it; boto3 needs a region for that
    # (any: the tools never use that client).
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    spec = importlib.util.spec_from_file_location(NAME, HOOK_FILE)
    assert spec is not None and spec.loader is not None, HOOK_FILE
    module = importlib.util.module_from_spec(spec)
    sys.modules[NAME] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[NAME]  # as the import system does: no half-initialised module stays behind
        raise
    return module


hook = load()
