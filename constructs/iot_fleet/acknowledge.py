"""Records a deliberate scanner (checkov) deviation on the resource it concerns, with the reason.

checkov ignores skips in Terraform JSON, so ``scripts/checkov_scan.py`` reads these records and
accepts a failed check only where the failing resource carries that check id and a reason.
"""

from __future__ import annotations

from cdktf import TerraformResource


def acknowledge(resource: TerraformResource, **reasons: str) -> None:
    """``acknowledge(fn, CKV_AWS_117="reason", ...)``: one entry per check id, each with its reason."""
    skips = []
    for check_id, reason in sorted(reasons.items()):
        if not reason.strip():
            raise ValueError(f"{check_id}: an acknowledged check needs a reason")
        skips.append({"id": check_id, "comment": reason})
    resource.add_override("//", {"checkov": {"skip": skips}})
