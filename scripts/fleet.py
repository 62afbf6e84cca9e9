#!/usr/bin/env python
"""fleet: enroll, inspect, revoke and decommission the devices of a deployed provisioning stack, and
rotate its claim certificate. Works against the sandbox and AWS alike, from `terraform output -json`.

**Examples** (`fleet` is installed in the project's venv: `pipenv run fleet ...` or `.venv/bin/fleet ...`;
`python scripts/fleet.py ...` runs the same):

    fleet enroll factory/batch-42.csv         # check every row, then enroll (idempotent)
    fleet list --status provisioned --type gateway
    fleet why SN-0042                         # why was this device refused?
    fleet revoke SN-0042 --reason "reported stolen"
    fleet decommission --all --yes            # what `make destroy` runs first
    fleet expiring --days 60 --json
    fleet rotate-claim                        # where a claim rotation stands; the next step

`fleet COMMAND --help` explains each command with its own examples.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from botocore.exceptions import BotoCoreError, ClientError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from scripts.deployed_stack import DeployedStack, StackError
from scripts.fleet_ops import certificates, claim_rotation, decisions, manifest
from scripts.fleet_ops import registry as reg
from scripts.fleet_ops.devices import Devices, Refused, Unrecorded

ROOT = Path(__file__).resolve().parents[1]


OK, REFUSED, PARTIAL = 0, 1, 3  # 2 is a usage error (typer's)
STATUSES = (reg.ENROLLED, reg.PROVISIONING, reg.PROVISIONED, reg.REVOKED, reg.DECOMMISSIONED, reg.FAILED)
SHOWN_ROWS = 50  # rows of a table printed in full; --json has them all
MAX_REASON = 256

app = typer.Typer(
    help=__doc__,
    rich_markup_mode="markdown",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
# Tables keep their columns whole when the output is a file or a pipe (Rich would assume 80 columns).
out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 200)
_stack_dir: Path | None = None

JsonOption = Annotated[bool, typer.Option("--json", help="print one JSON document (for scripts) instead of tables")]


@app.callback()
def _options(
    stack_dir: Annotated[
        Path | None, typer.Option(help="the deployed stack's folder (default: the only one in cdktf.out/stacks)")
    ] = None,
) -> None:
    global _stack_dir
    _stack_dir = stack_dir


def stack() -> DeployedStack:
    return DeployedStack.load(_stack_dir)


def fail(message: str, code: int = REFUSED) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", markup=True)
    return typer.Exit(code)


def emit(document: Any) -> None:
    print(json.dumps(document, indent=1, default=str))


def progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )


def confirm_many(what: str, count: int, the_stack: DeployedStack, yes: bool, allow_prod: bool) -> None:
    """Destructive work on many devices: refused in prod without --allow-prod, asked for unless --yes."""
    if the_stack.is_prod and not allow_prod:
        raise fail(f"the stack {the_stack.directory.name} is prod: {what} {count} devices needs --allow-prod")
    if not yes and not typer.confirm(
        f"{what} {count} devices of {the_stack.directory.name} ({the_stack.environment}, {the_stack.target})?", err=True
    ):
        raise fail("nothing done")


# enroll -------------------------------------------------------------------------------------------
@app.command()
def enroll(
    path: Annotated[
        Path, typer.Argument(metavar="MANIFEST", help="CSV with a header line, a JSON array or JSON Lines")
    ],
    skip_invalid: Annotated[
        bool, typer.Option("--skip-invalid", help="enroll the valid rows even if some are bad")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="check and plan only: write nothing")] = False,
    workers: Annotated[int, typer.Option(min=1, max=64, help="writes in flight at once")] = 16,
    json_: JsonOption = False,
) -> None:
    """Enroll a manufacturing manifest: one row per device, columns serialNumber, deviceType,
    manufacturer (required), firmwareVersion, location, thingName (optional; default `<type>-<serial>`),
    factoryPublicKey (optional, required with RequireAttestation: the device's EC P-256 factory key, PEM
    or base64 DER SubjectPublicKeyInfo).

    Every row is checked first, with the provisioning hook's own rules, against the stack's
    allowed_device_types, for serials or thing names repeated in the manifest, and for thing names
    another serial holds in the registry. One bad row and nothing is written (unless --skip-invalid);
    each is reported with its line. Running the same manifest again changes nothing and says so. A
    device already past `enrolled` (provisioning, provisioned, revoked...) is reported and left as it
    is, even one that starts provisioning while this runs.

    Exit codes: 0 done; 1 bad rows, nothing written; 3 bad rows skipped, or rows refused while writing.

    **Examples**

        fleet enroll batch-42.csv
        fleet enroll batch-42.json --dry-run
        fleet enroll batch-42.csv --skip-invalid --json > report.json
    """
    the_stack = stack()
    started = time.monotonic()
    try:
        raw, problems = manifest.read(path)
    except manifest.ManifestError as error:
        raise fail(str(error)) from None
    devices, invalid = manifest.validate(
        raw,
        the_stack.allowed_device_types,
        claim_client_id_prefix=the_stack.claim_client_id_prefix,
        require_factory_key=the_stack.require_attestation,
    )
    registry = reg.Registry(the_stack.client("dynamodb"), the_stack.table_name)
    with err.status(f"reading the registry for {len(devices):,} rows..."):
        plan = registry.plan(devices)
    problems = sorted(problems + invalid + plan.problems, key=lambda p: p.line)
    writing = not dry_run and (not problems or skip_invalid)
    results: list[reg.Enrollment] = [e for e in plan.enrollments if e.outcome not in (reg.NEW, reg.UPDATED)]
    if writing and plan.writes():
        with progress() as bar:
            task = bar.add_task("enrolling", total=len(plan.writes()))
            results += registry.enroll(plan.writes(), workers=workers, on_done=lambda _: bar.advance(task))
    elif not writing:
        results += plan.writes()  # what would be written
    seconds = time.monotonic() - started
    counts = Counter(e.outcome for e in results)
    conflicts = [e for e in results if e.outcome == reg.CONFLICT]
    untouched = [e for e in results if e.outcome == reg.UNTOUCHED]
    code = OK if not problems and not conflicts else (PARTIAL if writing else REFUSED)
    if json_:
        emit(
            {
                "manifest": str(path),
                "rows": len(raw),
                "badRows": len(problems),
                "written": writing,
                "dryRun": dry_run,
                "counts": dict(counts),
                "problems": [{"line": p.line, "serialNumber": p.serial_number, "message": p.message} for p in problems],
                "untouched": [_row(e) for e in untouched],
                "conflicts": [_row(e) for e in conflicts],
                "seconds": round(seconds, 2),
                "rowsPerSecond": round(len(devices) / seconds, 1) if seconds else None,
                "exitCode": code,
            }
        )
        raise typer.Exit(code)
    if problems:
        table = Table("line", "serial", "problem", title=f"{len(problems)} bad rows", title_justify="left")
        for problem in problems[:SHOWN_ROWS]:
            table.add_row(str(problem.line), problem.serial_number, problem.message)
        out.print(table)
        if len(problems) > SHOWN_ROWS:
            out.print(f"... and {len(problems) - SHOWN_ROWS} more (--json lists them all)")
    if untouched:
        table = Table(
            "line",
            "serial",
            "left as it is",
            title=f"{len(untouched)} devices already past enrolled",
            title_justify="left",
        )
        for enrollment in untouched[:SHOWN_ROWS]:
            table.add_row(str(enrollment.device.line), enrollment.device.serial_number, enrollment.detail)
        out.print(table)
        if len(untouched) > SHOWN_ROWS:
            out.print(f"... and {len(untouched) - SHOWN_ROWS} more (--json lists them all)")
    for enrollment in conflicts:
        out.print(
            f"line {enrollment.device.line}: {enrollment.device.serial_number} refused while writing: "
            f"{enrollment.detail}"
        )
    if problems and not writing:
        out.print(
            f"[bold]nothing written[/bold]: fix the rows above (or --skip-invalid to enroll the other "
            f"{len(devices) - len(plan.problems):,})"
            if not dry_run
            else "dry run: nothing written"
        )
        raise typer.Exit(code)
    verb = "would be" if dry_run else "were"
    summary = ", ".join(
        f"{counts[o]:,} {o}" for o in (reg.NEW, reg.UPDATED, reg.UNCHANGED, reg.UNTOUCHED, reg.CONFLICT) if counts[o]
    )
    if not dry_run and counts[reg.NEW] + counts[reg.UPDATED] == 0:
        out.print(f"nothing to change: the registry already holds every row as given ({summary or 'no rows'})")
    else:
        out.print(
            f"{path.name}: {summary} ({'rows that ' + verb + ' written' if dry_run else 'written'} in "
            f"{seconds:.1f} s, {len(devices) / max(seconds, 1e-9):,.0f} rows/s)"
        )
    raise typer.Exit(code)


def _row(enrollment: reg.Enrollment) -> dict[str, Any]:
    return {
        "line": enrollment.device.line,
        "serialNumber": enrollment.device.serial_number,
        "thingName": enrollment.device.thing_name,
        "detail": enrollment.detail,
    }


# list / show ----------------------------------------------------------------------------------------
@app.command("list")
def list_(
    device_type: Annotated[str | None, typer.Option("--type", help="only devices of this type")] = None,
    status: Annotated[str | None, typer.Option(help=f"only devices in this status ({', '.join(STATUSES)})")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="at most this many (then --next-token continues)")] = None,
    next_token: Annotated[str | None, typer.Option(help="continue where a --limit listing stopped")] = None,
    json_: JsonOption = False,
) -> None:
    """List registry devices, through the table's indexes (status, type, or both) page by page; the
    whole table is scanned only when nothing filters.

    **Examples**

        fleet list --status enrolled
        fleet list --type gateway --status provisioned --limit 100 --json
    """
    if status and status not in STATUSES:
        raise fail(f"--status {status}: one of {', '.join(STATUSES)}", 2)
    the_stack = stack()
    registry = reg.Registry(the_stack.client("dynamodb"), the_stack.table_name)
    items: list[dict[str, Any]] = []
    scanned, consumed, token = 0, 0.0, next_token
    while True:
        page = registry.page(
            device_type=device_type, status=status, next_token=token, limit=(limit - len(items)) if limit else None
        )
        items += page.items
        scanned, consumed, token = scanned + page.scanned, consumed + page.consumed, page.next_token
        if token is None or (limit and len(items) >= limit):
            break
    if json_:
        emit(
            {
                "devices": items,
                "count": len(items),
                "scannedCount": scanned,
                "consumedCapacity": consumed,
                "nextToken": token,
            }
        )
        return
    table = Table("serial", "type", "status", "thing name", "manufacturer", "updated")
    for item in items:
        table.add_row(
            str(item.get("serialNumber")),
            str(item.get("deviceType", "")),
            str(item.get("status", "")),
            str(item.get("thingName", "")),
            str(item.get("manufacturer", "")),
            str(item.get("updatedAt") or item.get("enrolledAt") or ""),
        )
    out.print(table)
    out.print(f"{len(items):,} devices ({scanned:,} items read, {consumed:g} read capacity units)")
    if token:
        out.print(f"more: --next-token {token}")


@app.command()
def show(serial: Annotated[str, typer.Argument(metavar="SERIAL")], json_: JsonOption = False) -> None:
    """One device: its registry item, thing (type, attributes), groups, certificates (status, expiry)
    and shadow.

    **Example**

        fleet show SN-0042
    """
    try:
        device = Devices(stack()).show(serial)
    except Refused as refused:
        raise fail(str(refused)) from None
    item = device["registry"]
    if "certificateHistory" in item:  # rotations: one event each, oldest first
        item["certificateHistory"] = certificates.history(item["certificateHistory"])
    if json_:
        emit(device)
        return
    table = Table("registry", "", show_header=False)
    for name in sorted(item):
        if name == "certificateHistory":
            events = [f"{e.get('at')} {e.get('event')} {e.get('certificateId', '')[:16]}" for e in item[name]]
            table.add_row(name, "\n".join(events))
        else:
            # The key itself is long and says nothing to a reader; its fingerprint is what the factory recorded.
            shown = manifest.fingerprint(str(item[name])) if name == "factoryPublicKey" else str(item[name])
            table.add_row(name, shown)
    out.print(table)
    thing = device["thing"]
    if thing is None:
        out.print(f"thing: none ({Devices.thing_name_of(item)} does not exist)")
    else:
        out.print(
            f"thing: {thing['thingName']} (type {thing['thingTypeName']}), groups: "
            f"{', '.join(device['groups']) or 'none'}"
        )
        out.print("  attributes: " + ", ".join(f"{k}={v}" for k, v in sorted(thing["attributes"].items())))
    for certificate in device["certificates"]:
        out.print(
            f"certificate {certificate['certificateId']}: {certificate['status']}, valid until "
            f"{certificate['notAfter']}, policies {', '.join(certificate['policies']) or 'none'}"
        )
    if not device["certificates"]:
        out.print("certificates: none")
    out.print(f"shadow: {json.dumps(device['shadow']) if device['shadow'] is not None else 'none'}")


# why ------------------------------------------------------------------------------------------------
@app.command()
def why(
    serial: Annotated[str, typer.Argument(metavar="SERIAL")],
    days: Annotated[float, typer.Option(min=0.0, help="how far back to read the hook's decisions")] = 30.0,
    limit: Annotated[int, typer.Option(min=1, help="the newest decisions shown")] = 20,
    json_: JsonOption = False,
) -> None:
    """Why was this device refused (or allowed)? The provisioning hook's decisions for the serial
    (time, reason code, detail, certificate), with the registry item and the certificates' state.

    **Examples**

        fleet why SN-0042
        fleet why SN-0042 --days 90 --json
    """
    the_stack = stack()
    devices = Devices(the_stack)
    item = devices.registry.get(serial) if not decisions.serial_problem(serial) else None
    found = decisions.decisions(
        the_stack.client("logs"),
        str(the_stack.output("provisioning_hook_function_name")),
        serial,
        since_days=days,
        limit=limit,
    )
    ids = devices.certificate_ids(item) if item else []
    ids += [d.certificate_id for d in found if d.decision == "allow" and d.certificate_id not in ids]
    certs = [c for c in (devices.certificate(i) for i in dict.fromkeys(ids)) if c]
    thing = devices.thing(Devices.thing_name_of(item)) if item else None
    said = decisions.findings(serial, item, found, certs, thing, days)
    if json_:
        emit(
            {
                "serialNumber": serial,
                "registry": item,
                "decisions": [d.as_dict() for d in found],
                "certificates": certs,
                "thingExists": thing is not None,
                "findings": said,
            }
        )
        return
    if found:
        table = Table(
            "time (UTC)",
            "decision",
            "reason",
            "detail",
            "certificate",
            title=f"hook decisions for {serial}",
            title_justify="left",
        )
        for decision in found:
            table.add_row(
                decision.time, decision.decision, decision.reason, decision.detail, decision.certificate_id[:12]
            )
        out.print(table)
    for line in said:
        out.print(f"- {line}")


# revoke / decommission ------------------------------------------------------------------------------
@app.command()
def revoke(
    serial: Annotated[str, typer.Argument(metavar="SERIAL")],
    reason: Annotated[str, typer.Option(help="why (kept in the registry with the time; required)")],
    json_: JsonOption = False,
) -> None:
    """Revoke a device: its certificates REVOKED, so it can no longer connect (AWS closes open connections
    within a few minutes), then registry `revoked` (with reason and time) so the hook refuses it from now
    on. A registry write that fails is retried, then reported (exit code 3; running it again records it).

    **Example**

        fleet revoke SN-0042 --reason "reported stolen"
    """
    if not reason.strip() or len(reason) > MAX_REASON:
        raise fail(f"--reason: say why, in at most {MAX_REASON} characters", 2)
    try:
        result = Devices(stack()).revoke(serial, reason.strip())
    except Refused as refused:
        raise fail(str(refused)) from None
    except Unrecorded as unrecorded:
        raise fail(str(unrecorded), PARTIAL) from None
    if json_:
        emit(result)
        return
    certificates_ = ", ".join(c[:12] + "…" for c in result["certificatesRevoked"]) or "none left to revoke"
    already = " (it already was; its first revocation is kept)" if result["alreadyRevoked"] else ""
    out.print(
        f"{serial}: revoked{already} at {result['revokedAt']}: {result['reason']}; certificates revoked: "
        f"{certificates_}"
    )


@app.command()
def decommission(
    serial: Annotated[str | None, typer.Argument(metavar="[SERIAL]", help="the device (or --all)")] = None,
    all_: Annotated[
        bool,
        typer.Option(
            "--all",
            help="every device of the stack, and whatever IoT still holds of "
            "its devices (things of its type, certificates on its policies)",
        ),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation (--all)")] = False,
    allow_prod: Annotated[bool, typer.Option("--allow-prod", help="allow --all on a prod stack")] = False,
    workers: Annotated[int, typer.Option(min=1, max=32, help="devices in flight at once")] = 8,
    json_: JsonOption = False,
) -> None:
    """Decommission a device for good: policies and thing detached from its certificates, the
    certificates deactivated and deleted, its thing and shadows deleted, then registry `decommissioned`
    (a failing registry write is retried, then reported with exit code 3). Running it again finishes
    what an interrupted run left.

    **Examples**

        fleet decommission SN-0042
        fleet decommission --all --yes         # before `cdktf destroy` (make destroy runs it)
    """
    if bool(serial) == all_:
        raise fail("give a SERIAL or --all", 2)
    try:
        the_stack = stack()
    except StackError as error:
        if all_ and "has no outputs" in str(error):
            _nothing_deployed(json_)
            return
        raise
    devices = Devices(the_stack)
    if serial:
        try:
            done = devices.decommission(serial)
        except Refused as refused:
            raise fail(str(refused)) from None
        except Unrecorded as unrecorded:
            raise fail(str(unrecorded), PARTIAL) from None
        if json_:
            emit(
                {
                    "serialNumber": serial,
                    "alreadyDecommissioned": done.already,
                    "certificatesDeleted": done.removed.certificates,
                    "thingsDeleted": done.removed.things,
                }
            )
            return
        already = " (it already was)" if done.already else ""
        out.print(
            f"{serial}: decommissioned{already}: {len(done.removed.certificates)} certificates and "
            f"{len(done.removed.things)} things deleted"
        )
        return
    serials = devices.in_service()
    if serials:
        confirm_many("decommission", len(serials), the_stack, yes, allow_prod)
    with progress() as bar:
        task = bar.add_task("decommissioning", total=len(serials))
        sweep = devices.decommission_all(serials, workers=workers, on_progress=lambda _: bar.advance(task))
    code = PARTIAL if sweep.failures else OK
    if json_:
        emit(
            {
                "devices": sweep.devices,
                "certificatesDeleted": sweep.certificates,
                "thingsDeleted": sweep.things,
                "failures": sweep.failures,
                "exitCode": code,
            }
        )
        raise typer.Exit(code)
    for failure in sweep.failures:
        err.print(f"failed: {failure}")
    out.print(
        f"decommissioned {sweep.devices} devices of {the_stack.directory.name} ({sweep.certificates} "
        f"certificates and {sweep.things} things deleted)"
    )
    raise typer.Exit(code)


def _nothing_deployed(json_: bool) -> None:
    if json_:
        emit({"devices": 0, "certificatesDeleted": 0, "thingsDeleted": 0, "failures": [], "exitCode": OK})
    else:
        out.print("no deployed stack: no devices to decommission")


# expiring -------------------------------------------------------------------------------------------
@app.command()
def expiring(
    days: Annotated[int, typer.Option(min=0, help="report certificates valid for fewer days than this")] = 30,
    rotate: Annotated[
        bool, typer.Option("--rotate", help="ask each of these devices to rotate its certificate (its shadow)")
    ] = False,
    workers: Annotated[int, typer.Option(min=1, max=64, help="shadow updates in parallel (--rotate)")] = 10,
    json_: JsonOption = False,
) -> None:
    """Claim and device certificates expiring within --days days (or expired), soonest first.

    With --rotate, each device listed is asked to rotate: its shadow's desired state gets
    `certificateRotation: <rotation id>`; the device (`test_provisioning.py rotate --if-requested`, at
    each start) asks for a new certificate from its own CSR, proves it and confirms; only then is the
    old one revoked. A device offline now picks it up when it connects. Exit code 3 when some could
    not be asked.

    **Examples**

        fleet expiring --days 60
        fleet expiring --days 3650 --json        # every certificate, with its expiry
        fleet expiring --days 30 --rotate        # and ask those devices to rotate
    """
    the_stack = stack()
    found = certificates.expiring(the_stack, days)
    asked = certificates.request_rotation(the_stack, found, workers=workers) if rotate else None
    if json_:
        document: dict[str, Any] = {"days": days, "certificates": [e.as_dict() for e in found]}
        if asked is not None:
            document["rotation"] = {
                "rotationId": asked.rotation_id,
                "requested": asked.requested,
                "errors": asked.errors,
                "seconds": asked.seconds,
            }
        emit(document)
        if asked is not None and asked.errors:
            raise typer.Exit(PARTIAL)
        return
    table = Table("kind", "device / generation", "certificate", "status", "not after (UTC)", "days left")
    for entry in found:
        table.add_row(
            entry.kind, entry.name, entry.certificate_id[:16], entry.status, entry.not_after, str(entry.days_left)
        )
    out.print(table)
    out.print(f"{len(found)} certificates expire within {days} days")
    if asked is not None:
        out.print(f"rotation {asked.rotation_id} asked of {len(asked.requested)} devices in {asked.seconds:.1f} s")
        for name, error in sorted(asked.errors.items())[:SHOWN_ROWS]:
            err.print(f"  not asked: {name}: {error}")
        if asked.errors:
            raise typer.Exit(PARTIAL)


# rotate-claim ---------------------------------------------------------------------------------------
@app.command("rotate-claim")
def rotate_claim(
    apply: Annotated[
        bool, typer.Option("--apply", help="perform the next step: record it in cdktf.json, then deploy")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation (--apply)")] = False,
    allow_prod: Annotated[bool, typer.Option("--allow-prod", help="allow --apply on a prod stack")] = False,
    days: Annotated[float, typer.Option(min=0.0, help="how far back to count each generation's use")] = 30.0,
    context_file: Annotated[Path, typer.Option(help="the cdktf.json whose context records the generations")] = (
        claim_rotation.CONTEXT_FILE
    ),
    json_: JsonOption = False,
) -> None:
    """Rotate the claim certificate with an overlap, in two deploys: first a new generation beside the
    current one (both provision devices; the factory switches to the new one: its certificate is now
    the claim_certificate_pem output), later the old generation retired (Terraform deactivates and
    deletes it; devices still carrying it can no longer provision). Without --apply: where the
    rotation stands, each generation's recent use, and the next step.

    **Examples**

        fleet rotate-claim
        fleet rotate-claim --apply              # asks, records ClaimCertificateGenerations, deploys
    """
    the_stack = stack()
    in_force = tuple(sorted(claim_rotation.deployed(the_stack)))
    recorded = claim_rotation.configured(context_file)
    try:
        step = claim_rotation.pending_step(in_force, recorded) or claim_rotation.next_step(in_force)
    except StackError as error:
        raise fail(str(error)) from None
    pending = recorded != in_force
    found = claim_rotation.generations(the_stack, since_days=days)
    if json_ and not apply:
        emit(
            {
                "inForce": list(in_force),
                "recorded": list(recorded),
                "generations": [g.__dict__ for g in found],
                "next": {"action": step.action, claim_rotation.PARAMETER: step.value, "pending": pending},
            }
        )
        return
    if not json_:
        _rotation_status(found, in_force, step, pending, days, context_file)
    if not apply:
        if not json_:
            out.print("run again with --apply to perform it")
        return
    if the_stack.is_prod and not allow_prod:
        raise fail(f"the stack {the_stack.directory.name} is prod: --apply needs --allow-prod")
    if not yes and not typer.confirm(
        f"deploy {claim_rotation.PARAMETER}={step.value} to {the_stack.directory.name}?", err=True
    ):
        raise fail("nothing done")
    claim_rotation.record(step.generations, context_file)
    deployed = claim_rotation.deploy(the_stack, step.generations, capture=json_)
    if deployed.returncode != 0:
        raise fail(
            f"the deploy failed (exit {deployed.returncode}): {claim_rotation.PARAMETER}={step.value} stays "
            f"recorded in {context_file}; fix the cause and run --apply again"
        )
    after = tuple(sorted(claim_rotation.deployed(DeployedStack.load(the_stack.directory))))
    if after != step.generations:
        raise fail(f"deployed, but the stack has generations {after} in force, not {step.generations}")
    # What the deploy changed: a rotation step adds or destroys a certificate and its attachment, nothing else.
    terraform = claim_rotation.applied(deployed.stdout or "") if json_ else None
    if json_:
        emit(
            {
                "inForce": list(after),
                "action": step.action,
                claim_rotation.PARAMETER: step.value,
                "terraform": terraform,
            }
        )
    else:
        out.print(f"claim certificate generations in force: {', '.join(map(str, after))}")


def _rotation_status(
    found: list[claim_rotation.Generation],
    in_force: tuple[int, ...],
    step: claim_rotation.Step,
    pending: bool,
    days: float,
    context_file: Path,
) -> None:
    table = Table(
        "generation", "certificate", "status", "valid until", f"devices allowed ({days:g} days)", "last allowed"
    )
    for generation in found:
        table.add_row(
            str(generation.number),
            generation.certificate_id[:16],
            generation.status,
            generation.not_after,
            str(generation.provisioned),
            generation.last_used or "-",
        )
    out.print(table)
    newest = max(in_force)
    if step.action == "add":
        out.print(
            f"next step: add generation {max(step.generations)} beside {newest} "
            f"({claim_rotation.PARAMETER}={step.value}), then give the factory the new claim certificate "
            "(terraform output -raw claim_certificate_pem, and its key: claim_private_key_file or "
            "claim_private_key); devices carrying "
            f"generation {newest} keep provisioning until it is retired"
        )
    else:
        older = ", ".join(str(g) for g in in_force if g != newest)
        out.print(
            f"next step: retire generation {older} ({claim_rotation.PARAMETER}={step.value}) once no device "
            "still to be provisioned carries it; Terraform deactivates and deletes it"
        )
    if pending:
        out.print(f"(recorded in {context_file.name} but not deployed yet: --apply deploys it)")


def main(argv: list[str] | None = None) -> int:
    """Runs a command and returns its exit code. Errors any operator can meet (no stack, the sandbox
    down, AWS refusing) end in one line and exit code 1, not a traceback."""
    try:
        app(args=argv, prog_name="fleet")
    except SystemExit as done:  # typer ends every command so, with its exit code
        return int(done.code or 0) if not isinstance(done.code, str) else REFUSED
    except StackError as error:
        err.print(f"error: {error}")
        return REFUSED
    except (ClientError, BotoCoreError) as error:
        err.print(f"error: AWS refused: {error}")
        return REFUSED
    return OK


if __name__ == "__main__":
    sys.exit(main())
