"""The claim certificate manufacturers put on devices, and the policy that limits it to provisioning."""

from __future__ import annotations

from pathlib import Path

from cdktf_cdktf_provider_aws.iot_certificate import IotCertificate
from cdktf_cdktf_provider_aws.iot_policy import IotPolicy
from cdktf_cdktf_provider_aws.iot_policy_attachment import IotPolicyAttachment
from constructs import Construct

from iot_fleet import documents
from iot_fleet.naming import AccountContext


class ClaimCertificate(Construct):
    """With a CSR the claim key never leaves the factory (and never enters Terraform state)."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        prefix: str,
        template_name: str,
        csr_path: str,
        account: AccountContext,
    ) -> None:
        super().__init__(scope, id_)
        self.certificate = IotCertificate(
            self,
            "certificate",
            active=True,
            csr=Path(csr_path).read_text() if csr_path else None,
        )
        self.policy = IotPolicy(
            self,
            "policy",
            name=f"{prefix}-claim-policy",
            policy=documents.terraform_string(documents.claim_policy(template_name), account.iot_arn_prefix),
        )
        IotPolicyAttachment(self, "attachment", policy=self.policy.name, target=self.certificate.arn)
