"""`make deploy` and `make destroy`: synth, then Terraform itself on the synthesized stack.

Usage: python -m scripts.deploy apply|destroy [--out cdktf.out] [--no-synth] [--adopt]

Terraform runs in the terminal's process group, so Ctrl-C reaches it directly and it stops gracefully,
recording in state what it created; this process ignores that Ctrl-C and keeps reading Terraform's
output until it exits (under `cdktf deploy`, cdktf dies first and Terraform's output pipe with it, so
Terraform dies without recording what it had created).

A deploy plans (`terraform plan -out`) and applies that saved plan. A create that reached AWS before
Terraform recorded it (an interruption, a kill, a lost connection) leaves an object no state knows, and
the next apply would stop on "already exists". The deploy keeps a mark in the stack folder until it
completes, recording the creates Terraform starts and the answers they get (scripts/unfinished_deploy.py);
the next deploy adopts, with Terraform `import` blocks, in one round before it applies, the objects its
creates may have made that the state does not hold (scripts/orphan_adoption.py says what is adopted
and why it is safe). Other objects under the stack's names stop the apply on "already exists", and are adopted only
when the operator says so (`--adopt`, `make deploy ADOPT=1`). An interrupted destroy needs nothing of
the kind: the next destroy's refresh drops from state what is already gone.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts import orphan_adoption, unfinished_deploy
from scripts.deployed_stack import ROOT

# What the Makefile exports for every cdktf and Terraform run; set here when run outside make.
TOOL_ENVIRONMENT = {
    "CHECKPOINT_DISABLE": "1",
    "DISABLE_VERSION_CHECK": "1",
    "CDKTF_DISABLE_PLUGIN_CACHE_ENV": "1",
    "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
    "TF_IN_AUTOMATION": "1",
}
INTERRUPTED = 130  # the shell's exit status for a command ended by Ctrl-C

Echo = Callable[[str], None]


def environment(overrides: dict[str, str] | None = None) -> dict[str, str]:
    env = {**TOOL_ENVIRONMENT, **os.environ, **(overrides or {})}
    cli_config = ROOT / ".terraformrc.generated"
    if not env.get("TF_CLI_CONFIG_FILE") and cli_config.is_file():
        env["TF_CLI_CONFIG_FILE"] = str(cli_config)
    return env


class Interrupt:
    """Ctrl-C while a deploy runs: noted, not acted on (Terraform, which got it too, stops by itself)."""

    def __init__(self) -> None:
        self.received = False

    def __call__(self, signum: int, frame: Any) -> None:
        self.received = True


@contextmanager
def interrupt_noted() -> Iterator[Interrupt]:
    interrupt = Interrupt()
    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        yield interrupt
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class Run:
    returncode: int
    lines: list[str]


def run(
    command: list[str],
    cwd: Path,
    env: dict[str, str],
    echo: Echo | None,
    render_json: bool = False,
    observe: Echo | None = None,
) -> Run:
    """Runs a command to its end, passing each line of its output to `echo` as it comes (None: quiet);
    `render_json`: the output is Terraform's machine-readable UI, echoed as its human messages;
    `observe`: also given each line as it comes, as it is."""
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    lines = []
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)
        if observe is not None:
            observe(line)
        if echo is not None:
            shown = _human(line) if render_json else line.rstrip("\n")
            if shown is not None:
                echo(shown)
    return Run(process.wait(), lines)


def _human(line: str) -> str | None:
    """The human message of one line of Terraform's machine-readable UI (errors in full)."""
    try:
        message = json.loads(line)
    except ValueError:
        message = None
    if not isinstance(message, dict):
        return line.rstrip("\n")
    kind = message.get("type")
    if kind in ("version", "outputs", "planned_change", "resource_drift"):  # the plan was shown before
        return None
    if kind == "diagnostic":
        d = message.get("diagnostic", {})
        where = f"\n  with {d['address']}" if d.get("address") else ""
        detail = f"\n\n{d['detail']}" if d.get("detail") else ""
        return f"\n{d.get('severity', 'error').capitalize()}: {d.get('summary', '')}{where}{detail}\n"
    return str(message.get("@message", "")) or None


class Deployment:
    """One synthesized stack and the Terraform commands run on it."""

    def __init__(
        self, out_dir: Path, env: dict[str, str], echo: Echo, *, synthesize: bool = True, adopt: bool = False
    ) -> None:
        self.out_dir = out_dir
        self.env = env
        self.echo = echo
        self.synthesize = synthesize
        self.adopt = adopt  # the operator's word: adopt every leftover the stack names, not only its own

    @property
    def stack_dir(self) -> Path:
        stacks = sorted(p.parent for p in (self.out_dir / "stacks").glob("*/cdk.tf.json"))
        if len(stacks) != 1:
            raise SystemExit(f"deploy: expected one synthesized stack under {self.out_dir}/stacks, found {len(stacks)}")
        return stacks[0]

    def quietly(self, *command: str, cwd: Path | None = None) -> Run:
        """A step whose output matters only when it fails (then it is shown)."""
        done = run(list(command), cwd or self.stack_dir, self.env, None)
        if done.returncode != 0:
            self.echo("".join(done.lines).rstrip())
        return done

    def terraform(self, *args: str, render_json: bool = False, echo: bool = True, observe: Echo | None = None) -> Run:
        return run(["terraform", *args], self.stack_dir, self.env, self.echo if echo else None, render_json, observe)

    def prepare(self) -> bool:
        """Synthesizes the stack and initialises Terraform in it (the backend follows Target)."""
        if self.synthesize and not self.synth():
            return False
        (self.stack_dir / orphan_adoption.IMPORT_FILE).unlink(missing_ok=True)  # a round cut short
        try:
            restored = restore_damaged_local_state(self.stack_dir)
        except DamagedState as damaged:
            self.echo(f"deploy: {damaged}")
            return False
        if restored:
            self.echo(f"deploy: {restored}")
        return self.quietly("terraform", "init", "-input=false").returncode == 0

    def synth(self) -> bool:
        """What `cdktf synth --output` does: the app (main.py) writes the stacks and their manifest, and
        a stack the manifest no longer lists (another Environment's) goes. Run with this Python, not
        through cdktf-cli and pipenv (cdktf.json's `app`), which add seconds and nothing else."""
        env = {**self.env, "CDKTF_OUTDIR": str(self.out_dir)}
        synthesized = run([sys.executable, str(ROOT / "main.py")], ROOT, env, self.echo)  # its notices, warnings
        if synthesized.returncode != 0:
            return False
        manifest = json.loads((self.out_dir / "manifest.json").read_text())
        listed = {Path(stack["workingDirectory"]).name for stack in manifest["stacks"].values()}
        for stale in (self.out_dir / "stacks").iterdir():
            if stale.is_dir() and stale.name not in listed:
                shutil.rmtree(stale)
        return True

    def recorded(self) -> set[str]:
        listed = self.quietly("terraform", "state", "list")
        return {line.strip() for line in listed.lines if line.strip()} if listed.returncode == 0 else set()

    def show(self, plan: Path) -> dict[str, Any]:
        shown = run(["terraform", "show", "-json", str(plan)], self.stack_dir, self.env, None)
        return json.loads("".join(shown.lines)) if shown.returncode == 0 else {}

    def plan(self, plan: Path, *, render_json: bool = False, echo: bool = True, refresh: bool = True) -> Run:
        """`refresh=False`: a quick plan from the state as recorded (imports still read their objects)."""
        return self.terraform(
            "plan",
            "-input=false",
            *(["-json"] if render_json else []),
            *([] if refresh else ["-refresh=false"]),
            f"-out={plan}",
            render_json=render_json,
            echo=echo,
        )

    def apply(self, interrupt: Interrupt) -> int:
        if not self.prepare():
            return INTERRUPTED if interrupt.received else 1
        configuration = json.loads((self.stack_dir / "cdk.tf.json").read_text())
        mark = unfinished_deploy.Mark(self.stack_dir)
        unfinished, set_aside = mark.read(configuration)
        if set_aside:
            self.echo(f"deploy: {set_aside}")
        if unfinished is None:
            mark.begin(configuration)  # removed only once this deploy completes, whatever ends it before
        # What a deploy from here may have made that the state does not hold (scripts/unfinished_deploy.py).
        evidence = unfinished.evidence - self.recorded() if unfinished else frozenset()
        # Adopted before the apply, not after it fails: a Lambda function or permission left behind would
        # cost five minutes first (the provider retries their create while the name is taken).
        looked = bool(evidence) or (unfinished is not None and self.adopt)
        with saved_plan(self.stack_dir) as plan:
            if looked:
                assert unfinished is not None
                whose = "it, or anyone," if self.adopt else "it"
                self.echo(
                    f"deploy: the last deploy of this stack did not finish (it began {unfinished.started}); looking "
                    f"for what {whose} created without recording it ({len(evidence)} create(s) unrecorded)"
                )
                allowed = None if self.adopt else set(evidence)
                planned = self._plan_adopting(plan, required=set(), allowed=allowed, interrupt=interrupt)
            else:
                if unfinished is not None:
                    self.echo("deploy: the last deploy of this stack did not finish; all it created is recorded")
                planned = 0 if self.plan(plan).returncode == 0 else 1
            if planned != 0 or interrupt.received:
                return INTERRUPTED if interrupt.received else planned
            applied = self._apply(plan, mark)
            if applied.returncode == 0:
                mark.clear()
                return self._outputs()
            if interrupt.received:
                self.echo("deploy interrupted: Terraform recorded what it created; `make deploy` again finishes it")
                return INTERRUPTED
            if applied.returncode < 0:
                self.echo(
                    f"deploy: Terraform was killed (signal {-applied.returncode}); `make deploy` again "
                    "adopts what it created without recording it"
                )
                return 1
            if looked:  # one adoption round per deploy
                self.echo("\ndeploy failed (it had already looked for unrecorded resources): see the error above")
                return 1
            try:
                taken = orphan_adoption.already_existing(orphan_adoption.diagnostics(applied.lines), self.recorded())
            except orphan_adoption.NotAdoptable as why:
                self.echo(f"\ndeploy failed; nothing adopted ({why}). `make deploy` is safe to run again.")
                return 1
            if not self.adopt:
                return self._refuse(
                    f"{', '.join(taken)}: 'already exists', and no unfinished deploy of this stack folder "
                    "explains it, so the object may be another deployment's (another checkout, region or "
                    "state of the same stack) or someone else's. If it is this stack's own (its state was lost), "
                    "`make deploy ADOPT=1` adopts it; else remove it, or deploy under another ProjectName or "
                    "Environment"
                )
            planned = self._plan_adopting(plan, required=set(taken), allowed=None, interrupt=interrupt, failed=plan)
            if planned != 0 or interrupt.received:
                return INTERRUPTED if interrupt.received else planned
            applied = self._apply(plan, mark)
            if applied.returncode != 0:
                if interrupt.received:
                    return INTERRUPTED
                self.echo("\ndeploy failed after adopting (one adoption round per deploy): see the error above")
                return 1
            mark.clear()
            return self._outputs()

    def _apply(self, plan: Path, mark: unfinished_deploy.Mark) -> Run:
        """Applies the saved plan, the mark recording its creates as Terraform reports them."""
        applied = self.terraform("apply", "-input=false", "-json", str(plan), render_json=True, observe=mark.observe)
        if mark.unwritten:
            self.echo(
                f"deploy: {mark.unwritten}; what this apply created without recording it can be adopted only "
                "with `make deploy ADOPT=1`"
            )
        return applied

    def _plan_adopting(
        self,
        plan: Path,
        *,
        required: set[str],
        allowed: set[str] | None,
        interrupt: Interrupt,
        failed: Path | None = None,
    ) -> int:
        """Saves to `plan` a plan that imports every resource the stack names which exists but is not in
        its state (module docstring of orphan_adoption); `allowed`: only these addresses (None: any);
        `required`: addresses that must be among them (an apply failed on them). `failed`: the saved plan
        of that apply, whose values give the import ids; without it a plan is made for them first.
        Returns 0 when the plan is saved."""
        recorded = self.recorded()
        if failed is None:
            first = self.plan(plan, render_json=True, echo=False, refresh=False)
            if first.returncode != 0:
                self._errors(first)
                return self._refuse("the plan failed (above)")
        planned = self.show(failed or plan)
        if not planned:
            return self._refuse("Terraform could not show the plan to find the import ids in")
        found = [c for c in orphan_adoption.candidates(planned, recorded) if allowed is None or c.address in allowed]
        unknown = required - {c.address for c in found}
        if unknown:
            return self._refuse(f"no import id can be known for {', '.join(sorted(unknown))}")
        imports = self.stack_dir / orphan_adoption.IMPORT_FILE

        def plan_importing(chosen: list[orphan_adoption.Candidate], refresh: bool) -> Run:
            imports.write_text(json.dumps(orphan_adoption.import_blocks(chosen), indent=2))
            return self.plan(plan, render_json=True, echo=False, refresh=refresh)

        try:
            chosen = found
            # A plan with every candidate, then quick ones (no refresh) without those whose import found
            # nothing and what depends on them: each pass drops at least one, so this ends. The plan
            # applied is one that refreshed the state.
            for attempt in range(len(found) + 1):
                probe = plan_importing(chosen, refresh=attempt == 0)
                missing, other = orphan_adoption.not_found(orphan_adoption.diagnostics(probe.lines))
                if other or interrupt.received or (probe.returncode != 0 and not missing):
                    self._errors(probe)
                    return self._refuse("the plan that adopts them failed (above)")
                if required & missing:
                    return self._refuse(
                        f"{', '.join(sorted(required & missing))}: 'already exists', yet its import found nothing"
                    )
                if not missing:
                    break
                chosen = orphan_adoption.without_dependents(planned, chosen, missing)
            else:
                return self._refuse("the plan that adopts them kept finding imports with nothing to import")
            if attempt > 0:
                final = plan_importing(chosen, refresh=True)
                if final.returncode != 0 or interrupt.received:
                    self._errors(final)
                    return self._refuse("the plan that adopts them failed (above)")
            configuration = json.loads((self.stack_dir / "cdk.tf.json").read_text())
            final_plan = self.show(plan)
            importing = {c["address"] for c in final_plan.get("resource_changes", []) if c["change"].get("importing")}
            if importing != {c.address for c in chosen}:  # also when the plan could not be read
                return self._refuse("the plan that adopts them does not import exactly the resources chosen")
            problems = orphan_adoption.refusals(final_plan, orphan_adoption.stack_tags(configuration))
            if problems:
                return self._refuse("; ".join(problems))
        finally:
            imports.unlink(missing_ok=True)
        if chosen:
            self.echo(
                f"\ndeploy: adopting {len(chosen)} resource(s) this stack names that exist in its account "
                "and region but not in its state"
                + (" (by your word: ADOPT)" if allowed is None else " (left by a deploy that did not finish)")
                + ":"
            )
            for candidate in chosen:
                self.echo(f"  adopted: {candidate.address} (id {candidate.import_id})")
        elif not required:
            self.echo("deploy: nothing was left unrecorded")
        if not required:  # no plan was shown yet: this is the one applied
            self.terraform("show", str(plan))
        return 0

    def _errors(self, quiet: Run) -> None:
        """The errors of a plan that ran quietly, as Terraform words them."""
        for line in quiet.lines:
            if '"diagnostic"' in line:
                self.echo(_human(line) or "")

    def _refuse(self, why: str) -> int:
        self.echo(f"\ndeploy failed; nothing adopted: {why}")
        return 1

    def _outputs(self) -> int:
        self.terraform("output")
        return 0

    def destroy(self, interrupt: Interrupt, allow_prod: bool = False) -> int:
        """Decommissions the stack's devices, then destroys it: IoT refuses to delete a device policy
        still attached to a device's certificate, and a thing type still used by things."""
        if not self.prepare():
            return INTERRUPTED if interrupt.received else 1
        configuration = json.loads((self.stack_dir / "cdk.tf.json").read_text())
        mark = unfinished_deploy.Mark(self.stack_dir)
        unfinished, set_aside = mark.read(configuration)
        if set_aside:
            self.echo(f"destroy: {set_aside}")
        unrecorded = sorted(unfinished.evidence - self.recorded()) if unfinished else []
        if unrecorded:
            self.echo(
                "destroy: the last deploy of this stack did not finish, and what it may have made of these is "
                f"not in the state, so this destroy cannot delete it: {', '.join(unrecorded)}. `make deploy` "
                "(which adopts it), then `make destroy`, does."
            )
        outputs = self.quietly("terraform", "output", "-json")
        if outputs.returncode == 0 and json.loads("".join(outputs.lines) or "{}"):  # something is deployed
            fleet = [sys.executable, "scripts/fleet.py", "--stack-dir", str(self.stack_dir), "decommission", "--all"]
            decommissioned = run(
                [*fleet, "--yes", *(["--allow-prod"] if allow_prod else [])], ROOT, self.env, self.echo
            )
            if decommissioned.returncode != 0:
                return INTERRUPTED if interrupt.received else 1
        destroyed = self.terraform("destroy", "-auto-approve", "-input=false")
        if destroyed.returncode != 0 and interrupt.received:
            self.echo("destroy interrupted: `make destroy` again finishes it")
            return INTERRUPTED
        if destroyed.returncode != 0:
            return 1
        # The mark keeps only the evidence no destroy could act on, so a later deploy adopts it and nothing
        # the destroyed deployment had recorded (another deployment may take those names now).
        mark.clear()
        if unfinished and unrecorded:
            mark.begin(configuration, started=unfinished.started)
            for address in unrecorded:
                mark.creating(address)
        return 0


class DamagedState(Exception):
    """The local state file is damaged and has no usable backup; the message says what to do."""


def _state_file_is_whole(path: Path) -> bool:
    try:
        return "version" in json.loads(path.read_text())
    except (OSError, ValueError, TypeError):
        return False


def _locked_by_another(path: Path) -> bool:
    """A running Terraform holds an fcntl lock on a local state file while it uses it (and rewrites it in
    place, so it is empty for a moment): that file is not damaged, only being written."""
    with path.open("r+b") as state:
        try:
            fcntl.lockf(state, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.lockf(state, fcntl.LOCK_UN)
        return False


def restore_damaged_local_state(stack_dir: Path) -> str | None:
    """With a local backend, Terraform rewrites its state file in place (truncate, then write): killed
    between the two, it leaves the file empty or cut short, and the next run would take an empty file
    for "nothing deployed". Its backup (`<state>.backup`) holds the state as that run found it, so it
    is put back, and the damaged file kept beside it; what the killed run created after that is then
    adopted like any unrecorded resource. Returns what was done, or None when the state is whole."""
    configuration = json.loads((stack_dir / "cdk.tf.json").read_text())
    local = configuration.get("terraform", {}).get("backend", {}).get("local")
    if local is None:  # a remote backend writes each state as a whole
        return None
    path = stack_dir / local.get("path", "terraform.tfstate")
    if not path.exists() or _state_file_is_whole(path):
        return None
    if _locked_by_another(path):
        raise DamagedState(
            f"the state file {path} is being written by a Terraform running now (it holds the file's lock): "
            "wait for it to finish, then deploy"
        )
    backup = path.with_name(f"{path.name}.backup")
    if not _state_file_is_whole(backup):
        raise DamagedState(
            f"the state file {path} is damaged ({path.stat().st_size} bytes) and has no whole "
            f"backup: restore it from a copy of yours before deploying"
        )
    damaged = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
    path.rename(damaged)
    shutil.copy2(backup, path)
    return (
        f"the state file {path} was damaged ({damaged.stat().st_size} bytes: a Terraform killed while writing "
        f"it); restored it from its backup, the state that run started from (the damaged file: {damaged})"
    )


@contextmanager
def saved_plan(stack_dir: Path) -> Iterator[Path]:
    """A file for one saved plan (it holds the stack's values, secrets among them): 0600, removed after."""
    handle, name = tempfile.mkstemp(prefix=".deploy-", suffix=".tfplan", dir=stack_dir)
    os.close(handle)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def deploy(
    out_dir: Path,
    env: dict[str, str] | None = None,
    echo: Echo = print,
    *,
    synthesize: bool = True,
    adopt: bool = False,
) -> int:
    """Synth and apply (with one adoption round); 0 when the stack is deployed, 130 when interrupted.
    `synthesize=False`: apply the stack already synthesized in `out_dir`. `adopt`: the operator's word
    that every object under the stack's names in its account and region is the stack's own."""
    with interrupt_noted() as interrupt:
        return Deployment(out_dir, environment(env), echo, synthesize=synthesize, adopt=adopt).apply(interrupt)


def destroy(
    out_dir: Path,
    env: dict[str, str] | None = None,
    echo: Echo = print,
    *,
    synthesize: bool = True,
    allow_prod: bool = False,
) -> int:
    with interrupt_noted() as interrupt:
        return Deployment(out_dir, environment(env), echo, synthesize=synthesize).destroy(interrupt, allow_prod)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.deploy", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["apply", "destroy"])
    parser.add_argument("--out", type=Path, default=ROOT / "cdktf.out", help="cdktf's output folder")
    parser.add_argument("--allow-prod", action="store_true", help="destroy: let a prod stack's devices go")
    parser.add_argument("--no-synth", action="store_true", help="use the stack already synthesized in --out")
    parser.add_argument(
        "--adopt",
        action="store_true",
        help="apply: adopt any object under the stack's names, not only its own leftovers",
    )
    args = parser.parse_args(argv)

    def echo(line: str) -> None:
        try:
            print(line, flush=True)
        except BrokenPipeError:  # whoever read it went (a `| tee` ended by the same Ctrl-C): Terraform goes on
            pass

    synthesize = not args.no_synth
    if args.command == "apply":
        return deploy(args.out.resolve(), echo=echo, synthesize=synthesize, adopt=args.adopt)
    return destroy(args.out.resolve(), echo=echo, synthesize=synthesize, allow_prod=args.allow_prod)


if __name__ == "__main__":
    sys.exit(main())
