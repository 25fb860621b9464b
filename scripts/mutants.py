"""The mutation check: break the README's promises one at a time and run the tests that must notice.

Each mutant is one small textual change in one package file (old text -> new text; the old text must
be there exactly once, or the mutant is stale and the check stops). The working tree (tracked and
untracked files, not ignored ones) is copied to a scratch directory, once unchanged for a baseline
run of every named test, then once per mutant with that change applied; each copy's tests run with
the venv's python from the copy's root (``python -m pytest``, PYTHONPATH = the copy), so the copy's
package is imported, not the editable install of the checkout (checked before anything runs, and by
the ``sanity`` mutant). Only the mutant's named tests run, with ``-x`` and a per-test timeout.

    .venv/bin/python scripts/mutants.py              # every mutant (make mutants)
    .venv/bin/python scripts/mutants.py -k stale,owner   # those whose name contains "stale" or "owner"
    .venv/bin/python scripts/mutants.py --list

A mutant is ``caught`` when its tests fail (pytest exit 1), ``survived`` when they pass; anything else
(a test id that does not exist, an interrupted run) is an ``error`` and counts as not caught. The exit
status is 0 only when every mutant run was caught.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = "airflow_provider_panda"


@dataclass(frozen=True)
class Mutant:
    name: str
    promise: str
    path: str  # relative to the package
    old: str
    new: str
    tests: tuple[str, ...]


STALE_UNIT = "tests/test_pipelines.py::test_each_term_of_the_stale_rule_alone_tells_a_new_outcome"
STALE_E2E = "tests/test_stale_status.py::test_a_retry_outcome_told_by_one_term_alone_ends_the_wait"

STALE_TERMS = [
    Mutant("stale-attempt-term", "a new attemptNr alone ends the staleness", "waiting.py",
           "return ((self.attempt is not None and isinstance(attempt, int) and attempt != self.attempt)",
           "return ((False)",
           (STALE_UNIT, STALE_E2E)),
    Mutant("stale-statechange-term", "a new stateChangeTime alone ends the staleness", "waiting.py",
           'or (self.changed is not None and _stamp(info.get("stateChangeTime")) != self.changed)',
           "or (False)",
           (STALE_UNIT, STALE_E2E)),
    Mutant("stale-dialog-term", "a new errorDialog alone ends the staleness", "waiting.py",
           'or info.get("errorDialog") != self.dialog)',
           ")",
           (STALE_UNIT, STALE_E2E)),
]

MUTANTS = [
    Mutant("sanity", "the copy is what gets imported: a wait never succeeds", "waiting.py",
           "if status in self.success:\n            return SUCCESS",
           "if status in self.success:\n            return FAILURE",
           ("tests/test_trigger.py::test_success_event",)),
    # --- the stale rule: each term alone tells the outcome of a command from the status before it
    *STALE_TERMS,
    # the same three, caught end to end by the deferred wait alone (a real DAG run, the trigger)
    *(Mutant(f"{m.name}-deferred", f"{m.promise} (the deferred wait)", m.path, m.old, m.new,
             (f"{STALE_E2E}[{term}-deferred]",))
      for m, term in zip(STALE_TERMS, ("attempt", "state change", "dialog"))),
    Mutant("stale-interim-finished", "after a recovery of a done task its interim finished is not the outcome",
           "waiting.py",
           "if self.spec.classify(status) is None:\n            return False  # it does not",
           "if self.spec.classify(status) is None or status != stale.status:\n            return False  # it does not",
           ("tests/test_pipelines.py::test_recovering_a_done_task_does_not_end_the_wait_on_its_interim_finished",)),
    Mutant("stale-grace-from-wait", "the grace after a command counts from the command, not the wait",
           "waiting.py",
           "if self.stale is not None and self.stale.sent_at is not None:",
           "if False:",
           ("tests/test_pipelines.py::test_the_grace_counts_from_the_command_not_from_the_wait",)),
    Mutant("downstream-mark-ignored", "a command's mark reaches every PanDA wait downstream", "marks.py",
           "    marks: list[dict[str, Any]] = []\n    if isinstance(after_command, dict):",
           "    return None\n    marks: list[dict[str, Any]] = []\n    if isinstance(after_command, dict):",
           ("tests/test_pipelines.py::test_recover_then_wait_again_looks_past_the_old_status",
            "tests/test_pipelines.py::test_kill_then_sensor_waits_for_the_abort")),
    Mutant("operator-own-mark-ignored", "a command operator's own wait looks past the status it found",
           "operators/base.py",
           "stale = StaleMark.newest(stale, upstream_mark(self, context, task_id, self.after_command))",
           "stale = None",
           ("tests/test_operators.py::test_terminate_operator_waits_past_the_status_its_command_found",
            "tests/test_pipelines.py::test_recovery_operator_waits_for_the_recovered_task")),
    # --- secrets
    Mutant("token-file-not-registered", "a token_file's tokens never appear in a text", "config.py",
           "        for secret in token_file_secrets(text):  # on every read: the file may have changed\n"
           "            masking.mask(secret)",
           "        for secret in token_file_secrets(text):  # on every read: the file may have changed\n"
           "            pass",
           ("tests/test_secrets.py::test_no_secret_anywhere[token_file]",
            "tests/test_secrets.py::test_no_secret_anywhere[token_file_json]")),
    Mutant("refresh-token-not-registered", "a refresh token from the connection never appears in a text",
           "config.py",
           "        masking.mask(self.refresh_token)\n",
           "",
           ("tests/test_secrets.py::test_no_secret_anywhere[refresh]",
            "tests/test_secrets.py::test_an_idp_quoting_the_refresh_token_back")),
    Mutant("connection-token-not-registered", "the id token of the password never appears in a text",
           "config.py",
           "        masking.mask(self.token)\n",
           "",
           ("tests/test_secrets.py::test_no_secret_anywhere[password]",)),
    # --- kills
    Mutant("cancel-on-kill-not-passed", "cancel_on_kill reaches the deferred wait's trigger", "operators/base.py",
           " cancel_on_kill=self.cancel_on_kill,\n",
           "\n",
           ("tests/test_operators.py::test_a_deferred_operator_kills_its_task_only_with_cancel_on_kill",)),
    Mutant("submitted-id-not-recorded", "on_kill kills the task this try submitted", "operators/base.py",
           '        self._jedi_task_id = task_id\n        xcom.push_task(',
           '        xcom.push_task(',
           ("tests/test_operators.py::test_sigterm_during_the_wait_kills_the_task_execute_submitted",)),
    Mutant("on-kill-ignores-cancel-on-kill", "cancel_on_kill=False leaves the task running", "operators/base.py",
           "        if not self.cancel_on_kill:\n",
           "        if False:\n",
           ("tests/test_operators.py::test_sigterm_during_the_wait_kills_the_task_execute_submitted[False]",)),
    # --- ownership
    Mutant("duplicate-answer-owner-check", "a duplicate answer naming another's task is not taken as ours",
           "operators/submit.py",
           "if not ownership.submitted_by(info, params[ownership.OWNER_KEY]):  # another's",
           "if False:  # another's",
           ("tests/test_ownership.py::test_a_duplicate_answer_to_a_first_submission_is_checked_for_ownership",)),
    Mutant("lookup-takes-any-task-as-ours", "a task of the name that another submitted is never taken as ours",
           "ownership.py",
           "mine = [int(t[\"jediTaskID\"]) for t in tasks if submitted_by(t, owner)]",
           "mine = [int(t[\"jediTaskID\"]) for t in tasks]",
           ("tests/unit/test_ownership_rules.py::test_the_tasks_of_a_name_split_by_owner",
            "tests/test_ownership.py::test_a_name_held_by_another_task_fails_before_anything_changes")),
    Mutant("resend-owner-check", "a duplicate answer to a resend is not taken as ours", "operators/submit.py",
           "if answer.from_resend and not self._is_mine(answer.task_id, params):",
           "if False:",
           ("tests/test_ownership.py::test_a_duplicate_answer_to_a_resend_is_checked_for_ownership",)),
    Mutant("name-lookup-ignores-others", "a name held by another task fails before anything is submitted",
           "operators/submit.py",
           "            elif others:\n",
           "            elif False:\n",
           ("tests/test_ownership.py::test_a_name_held_by_another_task_fails_before_anything_changes",)),
    Mutant("broken-spends-retries", "a broken task fails without spending Airflow retries", "ownership.py",
           "    if status == \"broken\":\n        return BROKEN\n    return FAIL",
           "    return FAIL",
           ("tests/unit/test_ownership_rules.py::test_what_a_failed_wait_asks_for",
            "tests/test_ownership.py::test_a_broken_task_fails_without_spending_retries")),
    # --- not found
    Mutant("not-found-grace-restarted-per-poke", "the grace of a task never seen expires in reschedule mode",
           "sensors/status.py",
           "started -= max(0.0, time.time() - first.timestamp())",
           "started -= 0.0",
           ("tests/test_operators.py::test_sensor_not_found_grace_expires_in_every_mode",)),
    Mutant("sensor-watch-not-kept", "the sensor's wait state is kept across pokes", "sensors/status.py",
           "if self._watch is None or self._watch.task_id != task_id:",
           "if True:",
           ("tests/test_operators.py::test_sensor_not_found_grace_expires_in_every_mode",)),
    Mutant("reschedule-forgets-sight", "a reschedule-mode sensor remembers the task was seen (state store)",
           "sensors/status.py",
           "            self._recall_sight(context, self._watch)\n",
           "",
           ("tests/test_not_found.py::test_a_seen_task_missing_for_a_moment_is_waited_for[reschedule]",)),
    Mutant("seen-task-no-new-grace", "a task seen before gets the whole grace again when it goes missing",
           "waiting.py",
           "self.missing_since = now if self.seen else self.started",
           "self.missing_since = self.started",
           ("tests/test_not_found.py::test_a_seen_task_missing_for_a_moment_is_waited_for[poke]",)),
    Mutant("seen-task-no-new-grace-deferred", "the same, in the deferred wait", "waiting.py",
           "self.missing_since = now if self.seen else self.started",
           "self.missing_since = self.started",
           ("tests/test_not_found.py::test_a_seen_task_missing_for_a_moment_is_waited_for[deferrable]",)),
    # --- waits and retries
    Mutant("timeout-kill-not-sent", "on_timeout='kill' kills the task", "operators/base.py",
           "                self.hook.kill_task(task_id)\n                action = \"; it was killed\"",
           "                action = \"; it was killed\"",
           ("tests/test_operators.py::test_timeout_kills_or_finishes_the_task",)),
    Mutant("trigger-ends-on-transient", "a deferred wait never ends on a transient fault", "triggers/wait.py",
           '                    self.log.warning("PanDA task %s: status read failed (%s); still waiting", '
           "self.jedi_task_id, exc)",
           "                    return self._event(ERROR, watch.last_status, str(exc), exc)",
           ("tests/test_trigger.py::test_transient_failures_keep_the_trigger_waiting",
            "tests/test_trigger.py::test_the_wait_survives_a_ten_minute_outage")),
    Mutant("poller-stale-reading", "a wait only takes a status from a round that started after it asked",
           "triggers/poller.py",
           "r.round_started > fresh_after))",
           "r.round_started > 0))",
           ("tests/test_poller.py::test_a_new_wait_never_takes_a_reading_older_than_itself",)),
    Mutant("poller-no-sweep", "a back-dated status ends its wait within K rounds (the sweep)", "triggers/poller.py",
           "sweep = self.rounds - self.last_sweep >= SWEEP_EVERY or new >= SWEEP_FOR_NEW",
           "sweep = new >= SWEEP_FOR_NEW",
           ("tests/test_poller.py::test_a_back_dated_status_ends_the_wait_within_k_rounds",)),
    Mutant("poller-per-task-reads", "many waits cost one request per round", "triggers/poller.py",
           "        if single:\n            fresh.update(await self._single(single))",
           "        single = list(watched)\n        if single:\n            fresh.update(await self._single(single))",
           ("tests/test_poller.py::test_many_waits_cost_one_request_per_round",)),
    Mutant("auto-retry-never-retries", "auto_retries asks PanDA to retry a failed task", "ownership.py",
           "    if has_policy and retries_done < MAX_AUTO_RETRIES and status in",
           "    if False and retries_done < MAX_AUTO_RETRIES and status in",
           ("tests/unit/test_ownership_rules.py::test_what_a_failed_wait_asks_for",
            "tests/test_operators.py::test_auto_retries_end_green_after_exactly_two_panda_retries")),
    Mutant("policy-ignored", "a retry policy's parameters are what the retry sends", "operators/submit.py",
           "                self.hook.retry_task(task_id, decision.new_params or None)",
           "                self.hook.retry_task(task_id, None)",
           ("tests/test_retry_policies.py::test_jobs_killed_for_memory_are_retried_with_more",)),
    Mutant("own-code-spends-airflow-retries", "the task's own code fails without Airflow retries",
           "operators/submit.py",
           "            return _Followed(attempts, decision.action == policies.STOP and decision.final)",
           "            return _Followed(attempts, False)",
           ("tests/test_retry_policies.py::test_the_tasks_own_code_is_not_retried",)),
    Mutant("429-not-transient", "429 is retried like a 5xx", "transport.py",
           "        if status_code == 429 or status_code >= 500:",
           "        if status_code >= 500:",
           ("tests/test_hook.py::test_transient_faults_are_retried",)),
]


def snapshot(dest: Path, head: bool = False) -> None:
    """The working tree as it is now (tracked and untracked files git does not ignore), or the
    last commit (``head``: edits in progress left out)."""
    if head:
        dest.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        return
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def apply(copy: Path, mutant: Mutant) -> None:
    path = copy / PKG / mutant.path
    text = path.read_text()
    count = text.count(mutant.old)
    if count != 1:
        raise SystemExit(f"mutant {mutant.name}: the old text is in {PKG}/{mutant.path} {count} times, not once "
                         f"(the code changed: update the mutant)\n{mutant.old}")
    path.write_text(text.replace(mutant.old, mutant.new))


def env_for(copy: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(copy), PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTEST_ADDOPTS", None)
    return env


def check_import(copy: Path) -> None:
    out = subprocess.run([sys.executable, "-c", f"import {PKG}; print({PKG}.__file__)"], cwd=copy,
                         env=env_for(copy), capture_output=True, text=True, check=True).stdout.strip()
    if not Path(out).resolve().is_relative_to(copy.resolve()):
        raise SystemExit(f"the scratch copy imports {PKG} from {out}, not from {copy}")


def pytest(copy: Path, tests: tuple[str, ...], timeout: int, extra: tuple[str, ...] = (),
           cap: float | None = None) -> tuple[int, str, float]:
    """Run ``tests`` in ``copy``; ``cap`` bounds the whole run (default: a few tests' timeouts)."""
    started = time.monotonic()
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", f"--timeout={timeout}",
           "-o", "timeout_method=thread", *extra, *tests]
    try:
        done = subprocess.run(cmd, cwd=copy, env=env_for(copy), capture_output=True, text=True,
                              timeout=cap or timeout * 3 + 120)
        return done.returncode, done.stdout + done.stderr, time.monotonic() - started
    except subprocess.TimeoutExpired as exc:
        return -1, f"{exc}", time.monotonic() - started


def first_failure(output: str) -> str:
    for line in output.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line.split(" - ")[0]
    return ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", dest="select", default="",
                        help="only mutants whose name contains one of these (comma-separated)")
    parser.add_argument("-j", "--jobs", type=int, default=max(1, min(3, (os.cpu_count() or 2) - 1)))
    parser.add_argument("--timeout", type=int, default=300, help="seconds per test")
    parser.add_argument("--head", action="store_true", help="the last commit, not the working tree")
    parser.add_argument("--no-baseline", action="store_true", help="skip the run of the unchanged copy")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the output of survivors and errors")
    args = parser.parse_args()
    mutants = [m for m in MUTANTS if any(part in m.name for part in args.select.split(","))]
    if args.list:
        for m in mutants:
            print(f"{m.name:40} {m.path:20} {m.promise}")
        return 0
    scratch = Path(tempfile.mkdtemp(prefix="panda-mutants-"))
    try:
        base = scratch / "base"
        snapshot(base, args.head)
        for m in mutants:  # every mutant applies to the tree as it is, before anything runs
            probe = (base / PKG / m.path).read_text().count(m.old)
            if probe != 1:
                raise SystemExit(f"mutant {m.name}: the old text is in {PKG}/{m.path} {probe} times, not once\n{m.old}")
        check_import(base)
        if not args.no_baseline:
            tests = tuple(dict.fromkeys(t for m in mutants for t in m.tests))
            print(f"baseline: {len(tests)} test selections on the unchanged copy ...", flush=True)
            rc, out, took = pytest(base, tests, args.timeout, ("-n", str(args.jobs)) if args.jobs > 1 else (),
                                   cap=3600)
            if rc != 0:
                print(out[-4000:])
                print(f"baseline FAILED ({first_failure(out) or f'exit {rc}'}): a mutant caught by a failing test "
                      "proves nothing; fix the tree first")
                return 2
            print(f"baseline: passed ({took:.0f} s)", flush=True)

        def run(m: Mutant) -> tuple[Mutant, str, str, float]:
            copy = scratch / m.name
            shutil.copytree(base, copy)
            apply(copy, m)
            rc, out, took = pytest(copy, m.tests, args.timeout)
            shutil.rmtree(copy, ignore_errors=True)
            verdict = {0: "survived", 1: "caught"}.get(rc, "error")
            detail = first_failure(out) if rc == 1 else (out[-3000:] if args.verbose else f"exit {rc}")
            line = f"{verdict:9} {m.name:40} {took:5.0f} s  {detail if verdict != 'survived' else m.promise}"
            print(line, flush=True)
            if verdict != "caught" and args.verbose:
                print(out[-3000:])
            return m, verdict, detail, took

        with ThreadPoolExecutor(args.jobs) as pool:
            results = list(pool.map(run, mutants))
        caught = sum(v == "caught" for _, v, _, _ in results)
        print(f"\n{caught} of {len(results)} mutants caught"
              + "".join(f"; {v}: {m.name}" for m, v, _, _ in results if v != "caught"))
        return 0 if caught == len(results) else 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
