"""The mark an unfinished deploy leaves: which creates it started and what became of them, read from
Terraform's own `apply -json` lines, and for which state. It is the evidence adoption rests on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scripts.unfinished_deploy import Mark
from tests.unit.scripts.test_orphan_adoption import TAKEN

STACK = {
    "terraform": {"backend": {"local": {"path": "/state/terraform.iot-provisioning-dev.tfstate"}}},
    "provider": {"aws": [{"region": "us-east-1"}]},
}


def hook(kind: str, address: str, action: str = "create") -> str:
    """One line of `terraform apply -json` about a resource, with the fields Terraform 1.11 writes."""
    resource = {"addr": address, "resource_type": address.split(".")[0]}
    return json.dumps(
        {
            "@level": "info",
            "@message": f"{address}: ...",
            "type": kind,
            "hook": {"resource": resource, "action": action},
        }
    )


def diagnostic(address: str, summary: str) -> str:
    return json.dumps(
        {"type": "diagnostic", "diagnostic": {"severity": "error", "summary": summary, "address": address}}
    )


def observed(tmp_path: Path, lines: list[str], configuration: dict[str, Any] = STACK) -> Mark:
    mark = Mark(tmp_path)
    mark.begin(configuration)
    for line in lines:
        mark.observe(line + "\n")
    return mark


def test_evidence_is_each_create_started_completed_or_failed_unknowably_but_never_one_refused_as_taken(
    tmp_path: Path,
) -> None:
    role, policy, table, logs, rule, alias = (
        "aws_iam_role.hook_role",
        "aws_iot_policy.claim_policy",
        "aws_dynamodb_table.registry_table",
        "aws_cloudwatch_log_group.hook_logs",
        "aws_iot_topic_rule.audit",
        "aws_kms_alias.key_alias",
    )
    mark = observed(
        tmp_path,
        [
            hook("apply_start", role),
            hook("apply_complete", role),  # created: in the state, or not (an S3 state not yet saved)
            hook("apply_start", policy),
            hook("apply_errored", policy),
            hook("apply_start", table),
            hook("apply_errored", table),  # cancelled by Ctrl-C: whether AWS made it is unknown
            hook("apply_start", logs),  # killed while waiting
            hook("apply_start", rule, action="update"),  # changes an object it knows
            hook("apply_start", alias),
            "not JSON: Terraform's plain words",
            diagnostic(policy, TAKEN["aws_iot_policy.claim_policy"]),  # after the apply: refused, the name was taken
        ],
    )
    mark.creating(policy)  # a later deploy tries it again, and is cut off: still someone else's name
    mark.observe(hook("apply_complete", alias))

    unfinished, set_aside = mark.read(STACK)

    assert set_aside is None and unfinished is not None
    assert unfinished.evidence == {role, table, logs, alias}
    assert unfinished.last[policy] == "creating" and unfinished.refused == {policy}


def test_a_line_cut_short_by_a_kill_loses_nothing_before_it_or_after_it(tmp_path: Path) -> None:
    mark = observed(tmp_path, [hook("apply_start", "aws_iam_role.a")])
    with mark.path.open("a") as written:
        written.write('{"creating": "aws_iam_ro')  # the deploy was killed while writing this line
    mark.observe(hook("apply_start", "aws_iot_policy.b"))  # the next deploy's first event

    unfinished, _ = mark.read(STACK)

    assert unfinished is not None and unfinished.evidence == {"aws_iam_role.a", "aws_iot_policy.b"}


def test_an_object_a_later_apply_deleted_is_no_longer_evidence(tmp_path: Path) -> None:
    mark = observed(
        tmp_path,
        [
            hook("apply_start", "aws_iam_role.a"),
            hook("apply_start", "aws_iam_role.a", action="delete"),
            hook("apply_complete", "aws_iam_role.a", action="delete"),
        ],
    )

    unfinished, _ = mark.read(STACK)

    assert unfinished is not None and unfinished.evidence == frozenset()


def test_a_mark_begun_again_for_an_earlier_deploy_keeps_when_that_one_began(tmp_path: Path) -> None:
    mark = Mark(tmp_path)
    mark.begin(STACK, started="2026-01-02T03:04:05Z")

    unfinished, _ = mark.read(STACK)

    assert unfinished is not None and unfinished.started == "2026-01-02T03:04:05Z"


@pytest.mark.parametrize(
    "elsewhere",
    [
        {**STACK, "terraform": {"backend": {"s3": {"bucket": "fleet-state", "key": "dev.tfstate"}}}},
        {**STACK, "provider": {"aws": [{"region": "eu-west-1"}]}},
    ],
    ids=["another backend", "another region"],
)
def test_a_mark_about_another_state_is_set_aside_saying_so_and_kept(tmp_path: Path, elsewhere: dict[str, Any]) -> None:
    mark = observed(tmp_path, [hook("apply_start", "aws_iam_role.a")])
    before = mark.path.read_text()

    unfinished, set_aside = mark.read(elsewhere)

    assert unfinished is None and not mark.path.exists()
    (kept,) = tmp_path.glob(".deploy-unfinished.set-aside-*")
    assert set_aside is not None and "is about another state" in set_aside and str(kept) in set_aside
    assert kept.read_text() == before


def test_no_mark_and_a_mark_without_its_first_line(tmp_path: Path) -> None:
    mark = Mark(tmp_path)
    assert mark.read(STACK) == (None, None)
    mark.path.write_text(json.dumps({"creating": "aws_iam_role.a"}) + "\n")

    unfinished, set_aside = mark.read(STACK)

    assert unfinished is None and set_aside is not None and "set aside" in set_aside


def test_a_new_mark_replaces_the_evidence_and_clear_removes_it(tmp_path: Path) -> None:
    mark = observed(tmp_path, [hook("apply_start", "aws_iam_role.a")])
    mark.begin(STACK)

    unfinished, _ = mark.read(STACK)
    assert unfinished is not None and unfinished.evidence == frozenset()
    mark.clear()
    assert not mark.path.exists()


def test_a_mark_that_cannot_be_written_is_reported_not_raised(tmp_path: Path) -> None:
    """Raising while Terraform's output is read would end the deploy, and Terraform with it."""
    mark = Mark(tmp_path / "gone")  # the stack folder was removed mid-deploy

    mark.observe(hook("apply_start", "aws_iam_role.a"))

    assert mark.unwritten is not None and "could not be written" in mark.unwritten
