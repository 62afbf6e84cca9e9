"""Applies a fleet-provisioning template body's intrinsic functions the way AWS IoT does.

Supported: Ref, Fn::FindInMap, Fn::Join, Fn::Sub, Fn::Split, Fn::Select (no Conditions exist).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

CERTIFICATE_ID = "AWS::IoT::Certificate::Id"


class TemplateError(ValueError):
    """The template cannot be applied with these parameters (AWS answers InvalidParameters)."""


def resolve_parameters(template: Mapping[str, Any], supplied: Mapping[str, str]) -> dict[str, str]:
    """Every declared parameter's value: supplied, else its Default; a missing one is an error."""
    values: dict[str, str] = {}
    for name, declaration in template.get("Parameters", {}).items():
        if name in supplied:
            values[name] = str(supplied[name])
        elif "Default" in declaration:
            values[name] = str(declaration["Default"])
        else:
            raise TemplateError(f"Parameter {name} is required by the template but was not provided")
    return values


def evaluate(node: Any, parameters: Mapping[str, str], mappings: Mapping[str, Any]) -> Any:
    if isinstance(node, list):
        return [evaluate(item, parameters, mappings) for item in node]
    if not isinstance(node, dict):
        return node
    if len(node) == 1:
        ((key, argument),) = node.items()
        if key == "Ref":
            if argument not in parameters:
                raise TemplateError(f"Ref to undeclared parameter {argument}")
            return parameters[argument]
        if key == "Fn::FindInMap":
            name, first, second = (evaluate(a, parameters, mappings) for a in argument)
            try:
                return mappings[name][first][second]
            except (KeyError, TypeError):
                raise TemplateError(f"Fn::FindInMap found no {name}/{first}/{second}") from None
        if key == "Fn::Join":
            separator, items = argument
            return str(separator).join(str(i) for i in evaluate(items, parameters, mappings))
        if key == "Fn::Sub":
            text = argument if isinstance(argument, str) else argument[0]
            return re.sub(r"\$\{([^}]+)\}", lambda m: str(evaluate({"Ref": m.group(1)}, parameters, mappings)), text)
        if key == "Fn::Split":
            separator, text = argument
            return str(evaluate(text, parameters, mappings)).split(separator)
        if key == "Fn::Select":
            index, items = argument
            chosen = evaluate(items, parameters, mappings)
            try:
                return chosen[int(evaluate(index, parameters, mappings))]
            except (IndexError, ValueError, TypeError):
                raise TemplateError("Fn::Select index out of range") from None
    return {k: evaluate(v, parameters, mappings) for k, v in node.items()}
