"""The boot module installs every patch the sandbox has, each once, in an order that keeps each one working."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from sandbox import boot

SANDBOX = Path(boot.__file__).parent


def _modules() -> dict[str, ast.Module]:
    return {
        ".".join(path.relative_to(SANDBOX.parent).with_suffix("").parts): ast.parse(path.read_text())
        for path in SANDBOX.rglob("*.py")
    }


def _defines_install(tree: ast.Module) -> bool:
    """A module-level `install`, or a class with one (a patch that keeps state on its class or instance)."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "install":
            return True
        if isinstance(node, ast.ClassDef) and any(
            isinstance(item, ast.FunctionDef) and item.name == "install" for item in node.body
        ):
            return True
    return False


def _imports_from(tree: ast.Module, prefix: str) -> bool:
    """`from moto.iot... import` or `import moto.iot...`."""
    return any(
        (isinstance(node, ast.ImportFrom) and (node.module or "").startswith(prefix))
        or (isinstance(node, ast.Import) and any(alias.name.startswith(prefix) for alias in node.names))
        for node in ast.walk(tree)
    )


def _order() -> list[str]:
    unused: Any = None
    return [boot.module_of(patch) for patch in boot.patches(unused, unused)]


def test_every_module_with_an_install_is_installed_by_boot_once() -> None:
    installers = {name for name, tree in _modules().items() if _defines_install(tree) and name != "sandbox.boot"}
    order = _order()
    assert len(order) == len(set(order)), "a patch listed twice"
    assert installers == set(order), (
        f"not installed at boot: {sorted(installers - set(order))}; "
        f"not a patch module: {sorted(set(order) - installers)}"
    )


def test_the_registry_lock_wraps_every_iot_backend_patch() -> None:
    """thread_safe_registry serializes the IoT and IoT data backends' methods as it finds them: a patch
    installed after it would run outside the lock."""
    modules = _modules()
    order = _order()
    last = order.index("sandbox.iot.thread_safe_registry")
    touching_iot = [
        name
        for name in order
        if name != "sandbox.iot.thread_safe_registry"
        and (_imports_from(modules[name], "moto.iot.") or _imports_from(modules[name], "moto.iotdata."))
    ]
    assert touching_iot, "no IoT patch found: the check would pass vacuously"
    assert all(order.index(name) < last for name in touching_iot), touching_iot


def test_the_action_method_cache_comes_after_every_patch_that_adds_response_methods() -> None:
    order = _order()
    assert order[-1] == "sandbox.request_pipeline.http_front"
