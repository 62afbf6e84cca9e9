"""IAM decisions for the sandbox's principals, read from moto's IAM and Lambda state: the one check
every path uses (the HTTP front for the functions' own AWS calls, the fleet-provisioning service for
the template's role, the hook and the topic rules' actions).

Who is checked: a Lambda function's execution role (its worker gets credentials of its own, see
`function_credentials`), a provisioning template's role and a topic rule action's role. Whoever
holds the plain `sandbox` key (Terraform, the operator tools, the tests) stays an administrator,
as the account's own credentials are. A role with a permissions boundary may do only what both its
policies and its boundary allow; an explicit Deny in either wins.

Lambda must be able to assume a function's execution role (its trust policy must let
lambda.amazonaws.com call sts:AssumeRole): CreateFunction and UpdateFunctionConfiguration with a
role it cannot assume are refused as Lambda refuses them, and so is the invocation of a function
whose role no longer trusts Lambda (see `install`).

Decisions are cached per principal, action, resource and context; the policy set of each role is
parsed once. Any IAM write (and any change to a Lambda function's policy, and moto's reset) empties
the caches, so a changed role is in force for the next request. moto server writes IAM on its
request threads: the writes this module wraps and its own reads of moto's IAM state hold one lock.
"""

from __future__ import annotations

import hashlib
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from moto.awslambda.exceptions import (
    CrossAccountNotAllowed,
    InvalidParameterValueException,
    InvalidRoleFormat,
    LambdaClientError,
)
from moto.awslambda.models import LambdaBackend, LambdaFunction, lambda_backends
from moto.awslambda.policy import Policy as LambdaPolicy
from moto.awslambda.utils import make_function_arn
from moto.core.base_backend import BackendDict
from moto.iam.models import IAMBackend, iam_backends

from sandbox.iam import authorization_reference
from sandbox.iam import policies as iam_policies
from sandbox.iam.policies import ABSENT, Decision, Principal, Request, Statement

# A refusal that comes from a defect in the sandbox's own mapping of a request, not from a policy.
MAPPING_DEFECT = "the sandbox's request mapping"
ADMIN_ACCESS_KEY = "sandbox"  # the account's own credentials: Terraform, operators, tests
# Most resources are one device's (its thing, its certificate) and never asked about again; the
# shared ones (the table, the key, the template's groups and policies) stay, least recently used out.
DECISIONS_KEPT = 4096
# IAM writes that change what a role may do (or whether it exists): each empties the caches.
IAM_WRITES = (
    "create_role",
    "delete_role",
    "update_assume_role_policy",
    "put_role_policy",
    "delete_role_policy",
    "attach_role_policy",
    "detach_role_policy",
    "create_policy_version",
    "delete_policy_version",
    "set_default_policy_version",
    "delete_policy",
    "put_role_permissions_boundary",
    "delete_role_permissions_boundary",
)
# Held by each IAM write above and by this module's reads of moto's IAM state (moto has no lock of its
# own: a read iterating a role's policies while a request thread wrote them could fail or see half).
IAM_LOCK = threading.RLock()
LAMBDA_SERVICE = "lambda.amazonaws.com"
# Lambda's answer to CreateFunction / UpdateFunctionConfiguration with a role it cannot assume
# (InvalidParameterValueException, 400) and to Invoke once it no longer can (AccessDeniedException, 403).
CANNOT_ASSUME = "The role defined for the function cannot be assumed by Lambda."
BOUNDARY = "permissions boundary"


class RoleNotAssumableByLambda(LambdaClientError):
    """Invoke of a function whose execution role Lambda cannot assume: AWS's AccessDeniedException, 403
    (the Invoke model lists no such error; real answers: terraform-aws-airship-ecs-service#60,
    swift-aws-lambda-runtime#676)."""

    code = 403

    def __init__(self) -> None:
        super().__init__("AccessDeniedException", CANNOT_ASSUME)


@dataclass(frozen=True)
class RolePolicies:
    """A role's policies, parsed: its identity-based ones, and its permissions boundary if it has one."""

    identity: tuple[tuple[Statement, ...], ...]
    boundary: tuple[Statement, ...] | None = None


@dataclass(frozen=True)
class AssumedRole:
    """A role session: who a function (or IoT acting with a template's or rule's role) is to IAM."""

    role_arn: str
    session: str

    @property
    def account_id(self) -> str:
        return self.role_arn.split(":")[4]

    @property
    def role_name(self) -> str:
        return self.role_arn.rsplit("/", 1)[-1]

    @property
    def arn(self) -> str:
        """arn:aws:sts::<account>:assumed-role/<role>/<session>, as AWS names it in a denial."""
        return f"arn:aws:sts::{self.account_id}:assumed-role/{self.role_name}/{self.session}"


class RoleMissing(Exception):
    """The role does not exist (AWS cannot assume it)."""


class Authority:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._policy_sets: dict[str, RolePolicies | None] = {}
        self._decisions: OrderedDict[tuple[Any, ...], Decision] = OrderedDict()
        self.generation = 0
        self.credentials: dict[str, AssumedRole] = {}

    # Caches ----------------------------------------------------------------------------------------
    def invalidate(self) -> None:
        with self._lock:
            self._policy_sets.clear()
            self._decisions.clear()
            self.generation += 1

    def install(self) -> None:
        """Empties the caches on every IAM write, Lambda policy change and moto reset, however it is made;
        IAM writes hold IAM_LOCK; Lambda checks its trust in a function's execution role."""
        if getattr(IAMBackend, "_sandbox_invalidates", False):
            return
        for name in IAM_WRITES:
            original = getattr(IAMBackend, name, None)
            if original is not None:
                setattr(IAMBackend, name, self._invalidating(original, IAM_LOCK))
        LambdaPolicy.add_statement = self._invalidating(LambdaPolicy.add_statement)
        LambdaPolicy.del_statement = self._invalidating(LambdaPolicy.del_statement)
        reset = BackendDict.reset  # /moto-api/reset and mock_aws's start and stop: every role is gone

        def reset_all(cls: type[BackendDict[Any]]) -> None:
            try:
                with IAM_LOCK:
                    reset()
            finally:
                self.invalidate()

        BackendDict.reset = classmethod(reset_all)
        self._check_lambda_trust()
        IAMBackend._sandbox_invalidates = True

    def _invalidating(self, method: Any, lock: Any = None) -> Any:
        def write(*args: Any, **kwargs: Any) -> Any:
            try:
                if lock is None:
                    return method(*args, **kwargs)
                with lock:
                    return method(*args, **kwargs)
            finally:
                self.invalidate()

        return write

    def _check_lambda_trust(self) -> None:
        """CreateFunction and UpdateFunctionConfiguration refuse a role Lambda cannot assume, and Invoke
        fails for a function whose role it no longer can, as in AWS. moto checks only that the role
        exists, at create."""
        create, update, invoke = (
            LambdaBackend.create_function,
            LambdaBackend.update_function_configuration,
            LambdaFunction.invoke,
        )

        def create_function(backend: LambdaBackend, spec: dict[str, Any]) -> Any:
            role, name = spec.get("Role"), spec.get("FunctionName")
            if isinstance(role, str) and isinstance(name, str):
                function_arn = make_function_arn(backend.region_name, backend.account_id, name)
                self._require_lambda_trust(role, function_arn, backend.account_id, creating=True)
            return create(backend, spec)

        def update_function_configuration(
            backend: LambdaBackend, function_name: str, qualifier: str, body: dict[str, Any]
        ) -> Any:
            if "Role" in body:
                function = backend.get_function(function_name, qualifier)
                self._require_lambda_trust(str(body["Role"]), function.function_arn, backend.account_id)
            return update(backend, function_name, qualifier, body)

        def invoke_function(function: LambdaFunction, *args: Any, **kwargs: Any) -> Any:
            if not self.trusts(function.role, LAMBDA_SERVICE, function.function_arn, function.account_id).allowed:
                raise RoleNotAssumableByLambda()
            return invoke(function, *args, **kwargs)

        LambdaBackend.create_function = create_function
        LambdaBackend.update_function_configuration = update_function_configuration
        LambdaFunction.invoke = invoke_function

    def _require_lambda_trust(self, role_arn: str, function_arn: str, account_id: str, creating: bool = False) -> None:
        valid = re.fullmatch(InvalidRoleFormat.pattern, role_arn)
        if valid is None:
            if creating:
                return  # moto refuses it with AWS's validation message
            raise InvalidRoleFormat(role_arn)
        if valid.group(2) != account_id:
            if creating:
                return
            raise CrossAccountNotAllowed()
        if not self.trusts(role_arn, LAMBDA_SERVICE, function_arn, account_id).allowed:
            raise InvalidParameterValueException(CANNOT_ASSUME)

    # Principals ------------------------------------------------------------------------------------
    def function_credentials(self, function_arn: str, role_arn: str, function_name: str) -> tuple[str, str]:
        """(access key id, secret) for a function's worker: requests signed with them are checked
        against the function's execution role, as Lambda's role session is."""
        digest = hashlib.sha256(f"{function_arn}|{role_arn}".encode()).hexdigest()
        access_key = "ASIA" + digest[:16].upper()
        with self._lock:
            self.credentials[access_key] = AssumedRole(role_arn, function_name)
        return access_key, digest[16:56]

    def caller(self, access_key: str) -> AssumedRole | None:
        """The role session behind an access key, or None for an administrator."""
        return self.credentials.get(access_key)

    def _iam(self, account_id: str) -> IAMBackend:
        return iam_backends[account_id]["aws"]

    def _role(self, role_arn: str) -> Any:
        """The role (call with IAM_LOCK held: moto's dictionaries change under its request threads)."""
        account_id = role_arn.split(":")[4] if role_arn.count(":") >= 5 else ""
        if not account_id:
            raise RoleMissing(role_arn)
        for role in list(self._iam(account_id).get_roles()):
            if role.arn == role_arn:
                return role
        raise RoleMissing(role_arn)

    def _managed_document(self, account_id: str, policy_arn: str) -> Any:
        """The default version of a managed policy (call with IAM_LOCK held); None if there is none."""
        policy = self._iam(account_id).managed_policies.get(policy_arn)
        if policy is None:
            return None
        return next((v.document for v in list(policy.versions) if v.is_default), None)

    def _identity_policies(self, role_arn: str) -> RolePolicies | None:
        """The role's inline and attached managed policies (default versions) and its permissions
        boundary, parsed; None if there is no such role."""
        with self._lock:
            if role_arn in self._policy_sets:
                return self._policy_sets[role_arn]
            generation = self.generation
        boundary_document: Any = None
        with IAM_LOCK:  # copy what is needed, parse it after
            try:
                role = self._role(role_arn)
            except RoleMissing:
                role = None
            if role is not None:
                account_id = role_arn.split(":")[4]
                documents: list[Any] = list(role.policies.values())
                for managed in list(role.managed_policies.values()):
                    documents += [v.document for v in list(managed.versions) if v.is_default]
                boundary_arn = role.permissions_boundary_arn
                if boundary_arn:
                    # A boundary whose policy cannot be read allows nothing (fail closed).
                    boundary_document = self._managed_document(account_id, boundary_arn) or {"Statement": []}
        parsed: RolePolicies | None = None
        if role is not None:
            parsed = RolePolicies(
                tuple(iam_policies.parse_document(d) for d in documents),
                iam_policies.parse_document(boundary_document) if boundary_document is not None else None,
            )
        with self._lock:
            if generation == self.generation:  # an IAM write meanwhile: do not keep what it changed
                self._policy_sets[role_arn] = parsed
        return parsed

    # The check ------------------------------------------------------------------------------------
    def authorize(
        self, caller: AssumedRole, action: str, resource: str, context: Mapping[str, Any] | None = None
    ) -> Decision:
        """May this role session perform the action on the resource? Its identity-based policies, within
        its permissions boundary if it has one (the role's own account); a role that does not exist may
        do nothing. The resource is the one the Service Authorization Reference says AWS checks: "*" for an
        action with no resource type."""
        try:
            resource = authorization_reference.authorized_resource(action, resource)
        except authorization_reference.ReferenceMismatch as mismatch:
            # The sandbox's own mapping of a request is wrong: refused, and said in the sandbox's log.
            print(f"sandbox: IAM: {mismatch}", file=sys.stderr, flush=True)
            return Decision(False, statement=str(mismatch), policy_type=MAPPING_DEFECT)
        full_context = self.global_context(
            caller, authorization_reference.supported_context(action, dict(context or {}))
        )
        key = (caller.role_arn, action, resource, tuple(sorted(full_context.items(), key=str)))
        with self._lock:
            cached = self._decisions.get(key)
            if cached is not None:
                self._decisions.move_to_end(key)
                return cached
            generation = self.generation
        policies = self._identity_policies(caller.role_arn)
        if policies is None:
            decision = Decision(False, statement="no such role")
        else:
            request = Request(action, resource, full_context)
            decision = iam_policies.evaluate(policies.identity, request)
            if policies.boundary is not None and not decision.explicit_deny:
                # https://docs.aws.amazon.com/IAM/latest/UserGuide/access_policies_boundaries.html: allowed
                # only if both allow; an explicit Deny in either wins.
                bounded = iam_policies.evaluate([policies.boundary], request)
                if bounded.explicit_deny or (decision.allowed and not bounded.allowed):
                    decision = Decision(False, bounded.explicit_deny, bounded.statement, policy_type=BOUNDARY)
        with self._lock:
            if generation == self.generation:
                self._decisions[key] = decision
                while len(self._decisions) > DECISIONS_KEPT:
                    self._decisions.popitem(last=False)
        return decision

    @staticmethod
    def global_context(caller: AssumedRole, context: Mapping[str, Any] | None) -> dict[str, Any]:
        """The global condition keys the sandbox can answer for a role session, plus the request's
        own; keys not here are ones it cannot answer, and conditions on them fail closed."""
        values: dict[str, Any] = {
            "aws:principalarn": caller.role_arn,
            "aws:principalaccount": caller.account_id,
            "aws:principaltype": "AssumedRole",
            "aws:userid": f"{caller.role_name}:{caller.session}",
            "aws:securetransport": True,  # it stands in for AWS's HTTPS endpoints
            "aws:sourcearn": ABSENT,
            "aws:sourceaccount": ABSENT,
            "aws:viaawsservice": False,
            "aws:calledvia": ABSENT,
        }
        for name, value in (context or {}).items():
            values[name.lower()] = tuple(value) if isinstance(value, list) else value
        return values

    def denial(self, caller: AssumedRole, action: str, resource: str, decision: Decision) -> str:
        if decision.policy_type == MAPPING_DEFECT:
            return (
                f"User: {caller.arn} is not authorized: the sandbox asked IAM about a resource AWS does not "
                f"check for {action}, so it refuses the request (fail closed; see the sandbox's log)"
            )
        kind = decision.policy_type or "identity-based"
        return iam_policies.denial_message(caller.arn, Request(action, resource), decision, kind)

    # Resource-based policies ----------------------------------------------------------------------
    def trusts(self, role_arn: str, service: str, source_arn: str, source_account: str) -> Decision:
        """Whether the role's trust policy lets the service assume it (sts:AssumeRole) for this source."""
        try:
            with IAM_LOCK:
                document = self._role(role_arn).assume_role_policy_document
        except RoleMissing:
            return Decision(False, statement="no such role")
        request = Request(
            "sts:AssumeRole",
            role_arn,
            service_context(source_arn, source_account),
            Principal("Service", service),
        )
        return iam_policies.evaluate([iam_policies.parse_document(document)], request)

    def function_policy_allows(self, function_arn: str, service: str, source_arn: str, source_account: str) -> Decision:
        """Whether the function's resource-based policy lets the service invoke it for this source
        (IoT invoking a hook for a template, or a topic rule's lambda action for the rule)."""
        parts = function_arn.split(":")
        if len(parts) < 7:
            return Decision(False, statement="no such function")
        try:
            function = lambda_backends[parts[4]][parts[3]].get_function(parts[6])
        except Exception:  # noqa: BLE001 - moto's not-found error: nothing to invoke, nothing allowed
            return Decision(False, statement="no such function")
        statements = list(function.policy.statements) if function.policy is not None else []
        request = Request(
            "lambda:InvokeFunction",
            function.function_arn,
            service_context(source_arn, source_account),
            Principal("Service", service),
        )
        return iam_policies.evaluate([iam_policies.parse_document({"Statement": statements})], request)


def service_context(source_arn: str, source_account: str) -> dict[str, Any]:
    """What AWS puts in the request context when a service acts for a resource of yours."""
    return {
        "aws:sourcearn": source_arn,
        "aws:sourceaccount": source_account,
        "aws:sourceowner": source_account,
        "aws:securetransport": True,
        "aws:viaawsservice": False,
    }


AUTHORITY = Authority()
