"""AddPermission that a retried request cannot apply twice.

Terraform's AWS SDK retries a request whose response it did not read; moto server then appends the
same statement again (seen once in ~10 sandbox deploys: two AddPermission 200s for one resource),
and RemovePermission later removes only one copy, so `terraform destroy` waits forever for the
statement to disappear. AWS refuses a duplicate statement id; here an identical repeat is treated
as the retry it is (no second copy) and a different statement under a used id is refused as AWS
refuses it. Delete when moto checks statement ids itself.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from moto.awslambda.exceptions import LambdaClientError
from moto.awslambda.policy import Policy

_LOCK = threading.Lock()


class ResourceConflictException(LambdaClientError):
    code = 409

    def __init__(self, sid: str) -> None:
        super().__init__("ResourceConflictException", f"The statement id ({sid}) provided already exists.")


def install() -> None:
    if getattr(Policy, "_sandbox_idempotent", False):
        return
    original = Policy.add_statement

    def add_statement(self: Policy, raw: str, qualifier: str | None = None) -> tuple[Any, str]:
        with _LOCK:
            before = len(self.statements)
            statement, revision = original(self, raw, qualifier)
            sid = statement.get("Sid")
            earlier = [s for s in self.statements[:before] if s.get("Sid") == sid]
            if earlier:
                self.statements.pop()
                if json.dumps(earlier[0], sort_keys=True) != json.dumps(statement, sort_keys=True):
                    raise ResourceConflictException(str(sid))
                return earlier[0], self.revision
            return statement, revision

    Policy.add_statement = add_statement
    Policy._sandbox_idempotent = True
