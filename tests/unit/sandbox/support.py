"""Helpers for the sandbox tests: functions moto can create (a role Lambda may assume, a zip)."""

from __future__ import annotations

import io
import json
import zipfile

import boto3


def execution_role(name: str) -> str:
    """A role Lambda may assume (Lambda refuses any other as a function's execution role)."""
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"},
        ],
    }
    iam = boto3.client("iam", region_name="us-east-1")
    return str(iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"])


def function(
    name: str, code: str, timeout: int = 3, env: dict[str, str] | None = None, files: dict[str, str] | None = None
) -> str:
    """A function whose zip holds app.py (`code`, handler app.handler) and `files` beside it."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as package:
        package.writestr("app.py", code)
        for path, text in (files or {}).items():
            package.writestr(path, text)
    role = execution_role(f"{name}-role")
    created = boto3.client("lambda", region_name="us-east-1").create_function(
        FunctionName=name,
        Runtime="python3.13",
        Role=role,
        Handler="app.handler",
        Timeout=timeout,
        Code={"ZipFile": archive.getvalue()},
        Environment={"Variables": env or {}},
    )
    return str(created["FunctionArn"])
