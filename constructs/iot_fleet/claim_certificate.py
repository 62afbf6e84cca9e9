"""The claim certificates manufacturers put on devices, and the policy that limits them to provisioning.

One certificate per generation in ClaimCertificateGenerations, each attached to the claim policy.
Rotating means adding the next generation (deploy: both are in force, the factory switches to the
new one), then, once no device still to be provisioned carries the old one, removing it (deploy:
Terraform deactivates and deletes it). Terraform owns every generation throughout, so a plan never
shows drift. Generation 1 keeps the construct ids of the single claim certificate this stack had
before generations existed, so an existing deployment keeps its certificate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
        generations: Sequence[int],
        csr_of: Callable[[int], str | None],
        account: AccountContext,
        client_id_prefix: str = documents.CLAIM_CLIENT_ID_PREFIX,
    ) -> None:
        super().__init__(scope, id_)
        self.policy = IotPolicy(
            self,
            "policy",
            name=f"{prefix}-claim-policy",
            policy=documents.terraform_string(
                documents.claim_policy(template_name, client_id_prefix=client_id_prefix), account.iot_arn_prefix
            ),
        )
        self.generations: dict[int, IotCertificate] = {}
        for generation in generations:
            suffix = "" if generation == 1 else f"-{generation}"
            csr = csr_of(generation)
            certificate = IotCertificate(
                self, f"certificate{suffix}", active=True, csr=Path(csr).read_text() if csr else None
            )
            IotPolicyAttachment(self, f"attachment{suffix}", policy=self.policy.name, target=certificate.arn)
            self.generations[generation] = certificate
        # The newest generation: what the factory puts on devices from now on.
        self.certificate = self.generations[max(self.generations)]
