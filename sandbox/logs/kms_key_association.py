"""CloudWatch Logs AssociateKmsKey and DisassociateKmsKey, which moto 5.2 lacks.

Terraform calls them when a log group's `kms_key_id` changes in place: after a deploy adopts a log
group that an interrupted deploy created with a KMS key Terraform never recorded, the stack's key
replaces it. Each names its log group by `logGroupName` or by its ARN in `resourceIdentifier`, as
AWS's API takes it. Delete when moto has them.
"""

from __future__ import annotations

from moto.logs.exceptions import InvalidParameterException, ResourceNotFoundException
from moto.logs.models import LogGroup
from moto.logs.responses import LogsResponse


class LogsKmsKeyAssociation:
    """Methods added to moto's LogsResponse (`self` is the response handler)."""

    def _sandbox_log_group(self: LogsResponse) -> LogGroup:
        name = self._get_param("logGroupName")
        identifier = self._get_param("resourceIdentifier")
        if bool(name) == bool(identifier):
            raise InvalidParameterException("Exactly one of logGroupName and resourceIdentifier must be given")
        if identifier:
            name = identifier.split(":log-group:", 1)[-1].removesuffix(":*")
        group = self.logs_backend.groups.get(name)
        if group is None:
            raise ResourceNotFoundException("The specified log group does not exist.")
        return group

    def associate_kms_key(self: LogsResponse) -> str:
        key = self._get_param("kmsKeyId")
        if not key:
            raise InvalidParameterException("kmsKeyId is required")
        LogsKmsKeyAssociation._sandbox_log_group(self).kms_key_id = key
        return ""

    def disassociate_kms_key(self: LogsResponse) -> str:
        LogsKmsKeyAssociation._sandbox_log_group(self).kms_key_id = None
        return ""


def install() -> None:
    if getattr(LogsResponse, "_sandbox_kms_key_association", False):
        return
    LogsResponse.associate_kms_key = LogsKmsKeyAssociation.associate_kms_key
    LogsResponse.disassociate_kms_key = LogsKmsKeyAssociation.disassociate_kms_key
    LogsResponse._sandbox_kms_key_association = True
