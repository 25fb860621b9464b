"""What to do after a failed attempt: retry (with which new parameters), recover lost files, raise
the attempts, or stop; and why, in one line for the task log. Pure: no I/O, no Airflow.

A policy is any callable ``(diagnosis, attempts_so_far) -> Decision``
(:class:`RetryPolicy`), given the :class:`~airflow_provider_panda.diagnosis.Diagnosis` of the
attempt that just failed and how many automatic retries were already sent for the task (0 after the
first attempt). :class:`DefaultRetryPolicy` acts as a shifter would; :class:`SimplePolicy` is the
plain ``auto_retries`` + ``retry_new_params`` (the same parameters every time).

Which new parameters a retry can carry (panda-server 1.0.4, the package installed for the
real-server tier; PanDA server and JEDI ship together in it):

- ``task/retry`` with ``new_parameters`` (``pandaserver/api/v1/task_api.py``, ``retry``) merges them
  into the stored task parameters and calls ``insertTaskParamsPanda(..., allowActiveTask=True)``
  (``pandaserver/taskbuffer/db_proxy_mods/task_event_module.py``). For a ``taskType`` ``anal``
  task that ended (finished, failed, aborted, done, exhausted) it keeps only the keys of
  :data:`RETRY_KEYS` (``dsFor*``, ``site``, ``cloud``, ``includedSite``, ``excludedSite``,
  ``cliParams``, ``nFiles``, ``nEvents``, ``fixedSandbox``, ``currentPriority``, ``priority``,
  ``ramCount``, ``loopingCheck``, ``forceStaged`` and ``task_split_rules.changeable_split_rule_names``)
  and queues an ``incexec`` command with them; everything else is dropped there.
- ``ramCount`` the server also writes straight into ``JEDI_Tasks.ramCount`` (and lowers larger
  per-file values), and ``retryTask_JEDI`` (``incexec``) resets the per-file ``ramCount`` of the
  files to retry, so the new jobs get it. On the real server (the team's harness run, not re-run
  for this module) it was the only one of ramCount, walltime, cpuTime and excludedSite that the
  new jobs carried.
- ``walltime`` and ``cpuTime`` are not in the list, and even in the stored parameters JEDI's
  ``TaskRefiner`` would keep the old values on re-refining (``JediTaskSpec.reserve_old_attributes``:
  ramCount, walltime, cpuTime, ...). ``maxWalltime`` (a split rule, hours) is not a changeable one.
  So no retry gives jobs more time: the default policy stops on time limits, with the resubmission
  to make, unless it can make each job shorter (``nFilesPerJob``, a changeable split rule: JEDI's
  ``TaskCommando`` writes it into the task parameters and the re-refine sets the split rule; read in
  the source, not yet checked on the real server).
- ``excludedSite`` reaches JEDI's task parameters, but only the ATLAS analysis broker reads it
  (``pandajedi/jedibrokerage/AtlasAnalJobBroker.py``, with ``AtlasAnalTaskRefiner`` setting the
  limited-sites rule; JEDI's ``[jobbroker] modConfig`` maps ``atlas:user`` to it). The generic broker
  (``GenJobBroker``, other VOs, our harness's ``wlcg``) and ``AtlasProdJobBroker`` ignore it, which
  is why it had no effect in our harness. The default policy excludes sites only where it works.
- Without new parameters the retry is a ``retry`` command: ``retryTask_JEDI`` gives each file that
  used up its attempts 5 more (``maxAttempt=5``). A plain retry of an ``exhausted`` task needs the
  production role (``task_event_module.py`` ``_check_command_allowed``). ``task/increase_attempts``
  needs the production role and a task that is still running, scouting or ready
  (``increaseAttemptNrPanda``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from airflow_provider_panda.diagnosis import Category, Diagnosis
from airflow_provider_panda.exceptions import PandaInputError

RETRY, RECOVER, INCREASE_ATTEMPTS, STOP = "retry", "recover", "increase_attempts", "stop"
ACTIONS = (RETRY, RECOVER, INCREASE_ATTEMPTS, STOP)

# The keys ``insertTaskParamsPanda`` carries into a retry (panda-server 1.0.4,
# pandaserver/taskbuffer/db_proxy_mods/task_event_module.py), plus any key starting with "dsFor".
RETRY_KEYS = frozenset({
    "site", "cloud", "includedSite", "excludedSite", "cliParams", "nFiles", "nEvents", "fixedSandbox",
    "currentPriority", "priority", "ramCount", "loopingCheck", "forceStaged",
    # pandaserver/taskbuffer/task_split_rules.py, changeable_split_rule_names
    "allowIncompleteInDS", "t1Weight", "nEsConsumers", "nMaxFilesPerJob", "nGBPerJob", "noInputPooling",
    "nFilesPerJob", "nEventsPerWorker", "nJumboJobs", "avoidVP", "allowInputLAN", "useLocalIO",
    "noLoopingCheck", "maxCoreCount", "onlyTagsForFC", "useZipToPin", "ignoreMissingInDS", "noAutoPause",
})
RETRY_KEY_PREFIX = "dsFor"
#: Retry keys whose effect on the new jobs was checked on the real server (the others: source only).
RETRY_KEYS_CHECKED = frozenset({"ramCount"})
#: Task statuses a retry is accepted from (``task/retry``; ``exhausted`` needs the production role
#: for a retry without new parameters).
RETRYABLE = frozenset({"finished", "failed", "exhausted"})
#: Task statuses ``task/increase_attempts`` is accepted in (``increaseAttemptNrPanda``).
INCREASABLE = frozenset({"running", "scouting", "ready"})
#: (vo, prodSourceLabel) whose JEDI job broker honours ``excludedSite`` (``AtlasAnalJobBroker``).
SITE_EXCLUSION_BROKERS = frozenset({("atlas", "user")})


def refused_keys(params: Mapping[str, Any] | None) -> list[str]:
    """The keys of ``params`` a PanDA retry would drop (sorted)."""
    return sorted(k for k in (params or {}) if k not in RETRY_KEYS and not str(k).startswith(RETRY_KEY_PREFIX))


def check_retry_params(params: Mapping[str, Any] | None, what: str = "retry parameters") -> dict[str, Any]:
    """``params`` as a dict, or :class:`PandaInputError` naming the keys PanDA would drop on a retry."""
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise PandaInputError(f"{what} must be a dict of task parameters, got {params!r:.60}")
    refused = refused_keys(params)
    if refused:
        raise PandaInputError(
            f"{what}: PanDA does not apply {', '.join(refused)} on a retry (panda-server keeps only "
            f"{', '.join(sorted(RETRY_KEYS))} and dsFor* of a retry's new parameters); change them by "
            "submitting the task again under a new taskName")
    return dict(params)


@dataclass(frozen=True)
class Decision:
    """The next action after a failed attempt, and its reason (a log line, with the evidence).

    ``new_params`` go with a :data:`RETRY` (only keys PanDA applies on a retry: checked here, so a
    wrong one is refused before anything is sent). ``increase`` is the number of attempts an
    :data:`INCREASE_ATTEMPTS` adds. ``suggested`` is, with a :data:`STOP`, what a resubmission
    should change (e.g. a longer ``maxWalltime``), for the user to read: nothing is sent with it.
    ``final`` with a :data:`STOP` says no retry of any kind can help (the task's own code fails
    everywhere): the operator then fails without spending Airflow retries either.
    """

    action: str
    reason: str
    new_params: dict[str, Any] = field(default_factory=dict)
    increase: int = 0
    suggested: dict[str, Any] = field(default_factory=dict)
    final: bool = False

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise PandaInputError(f"a retry decision's action must be one of {', '.join(ACTIONS)}, got {self.action!r}")
        if self.new_params and self.action != RETRY:
            raise PandaInputError(f"only a retry takes new parameters, not {self.action}: {self.new_params}")
        object.__setattr__(self, "new_params", check_retry_params(self.new_params, "a retry decision's new_params"))
        if self.action == INCREASE_ATTEMPTS and (isinstance(self.increase, bool) or not isinstance(self.increase, int)
                                                 or self.increase < 1):
            raise PandaInputError(f"increase_attempts needs a positive number of attempts, got {self.increase!r}")

    @property
    def acts(self) -> bool:
        """Whether something is to be sent to PanDA (anything but a stop)."""
        return self.action != STOP

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "reason": self.reason, "new_params": dict(self.new_params),
                "increase": self.increase, "suggested": dict(self.suggested), "final": self.final}


@runtime_checkable
class RetryPolicy(Protocol):
    """Anything called as ``policy(diagnosis, attempts_so_far)`` that returns a :class:`Decision`.

    ``attempts_so_far`` is the number of automatic retries (or recoveries) already sent for the task
    (0 when its first attempt has just failed). A plain function will do::

        def my_policy(diagnosis, attempts_so_far):
            if diagnosis.category == "memory" and attempts_so_far < 2:
                return Decision("retry", diagnosis.evidence, {"ramCount": 2 * (diagnosis.ram_count or 2000)})
            return DefaultRetryPolicy()(diagnosis, attempts_so_far)
    """

    def __call__(self, diagnosis: Diagnosis, attempts_so_far: int) -> Decision: ...


def _status_refusal(diagnosis: Diagnosis) -> str | None:
    """Why PanDA would not take a retry in this status, or None."""
    if diagnosis.status is not None and diagnosis.status not in RETRYABLE:
        return f"PanDA retries only a finished, failed or exhausted task, and this one is {diagnosis.status}"
    return None


@dataclass(frozen=True)
class SimplePolicy:
    """Today's ``auto_retries`` + ``retry_new_params``: up to ``retries`` retries of a finished,
    failed or exhausted task, with the same ``new_params`` every time, whatever went wrong."""

    retries: int
    new_params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise PandaInputError(f"retries must be a non-negative integer, got {self.retries!r}")
        object.__setattr__(self, "new_params", check_retry_params(self.new_params, "retry_new_params"))

    def __call__(self, diagnosis: Diagnosis, attempts_so_far: int) -> Decision:
        if attempts_so_far >= self.retries:
            return Decision(STOP, f"{diagnosis.evidence}; all {self.retries} automatic retries used")
        refusal = _status_refusal(diagnosis)
        if refusal:
            return Decision(STOP, f"{diagnosis.evidence}; {refusal}")
        with_params = f" with {self.new_params}" if self.new_params else ""
        return Decision(RETRY, f"{diagnosis.evidence}; automatic retry {attempts_so_far + 1} of {self.retries}"
                               f"{with_params}", dict(self.new_params))


def _round_up(value: float, step: int = 100) -> int:
    return int(math.ceil(value / step) * step)


@dataclass(frozen=True)
class DefaultRetryPolicy:
    """The rules a shifter follows, with bounds.

    ====================  =======================================  ===========================================
    category              action                                   bound
    ====================  =======================================  ===========================================
    memory                retry with ``ramCount`` x memory_factor  memory_ceiling (then stop)
    walltime              retry with half the ``nFilesPerJob``     down to 1 file per job; else stop, with the
                          (shorter jobs; a retry cannot add time)  ``maxWalltime`` to resubmit with (x
                                                                   walltime_factor, up to walltime_ceiling h)
    walltime (looping)    stop: a hung payload; ``loopingCheck``   (suggested: ``loopingCheck: False``)
                          False is the user's call
    site                  retry with the failing sites (no job     max_excluded_sites in all; where the broker
                          finished there) in ``excludedSite``      ignores ``excludedSite``: one plain retry
    user_code             stop at once                             (no grid time spent)
    lost_files            recover (file recovery request)          max_retries
    too_few_attempts      plain retry (5 more attempts per file)   exhausted: production role only
    unknown               one plain retry                          then stop
    any                   stop when PanDA refuses more retries     max_retries automatic retries in all
    ====================  =======================================  ===========================================

    :param max_retries: automatic retries (and recoveries) in all, so at most ``1 + max_retries`` attempts.
    :param memory_factor: how much more memory each memory retry asks for (1.5: 4000 -> 6000).
    :param memory_ceiling: the most memory a retry asks for, in the task's ``ramUnit`` (MB, usually
        per core); 8000 is more than most grid queues offer a core, so set it to what your sites offer.
    :param unknown_memory: the memory assumed when neither the task nor its jobs say (MB per core).
    :param walltime_factor: how much longer the suggested resubmission's ``maxWalltime`` is.
    :param walltime_ceiling: the longest ``maxWalltime`` suggested, in hours.
    :param max_excluded_sites: how many sites the task may exclude in all (earlier ones included).
    :param exclude_sites: exclude failing sites: None (default) only for the (vo, prodSourceLabel)
        whose JEDI broker honours ``excludedSite`` (:data:`SITE_EXCLUSION_BROKERS`); True or False always.
    :param split_for_walltime: on time limits, retry with half the task's ``nFilesPerJob``.
    :param production_role: the connection has the production role (needed to retry an exhausted task
        without new parameters and for ``increase_attempts``).
    :param attempts_increase: how many attempts ``increase_attempts`` adds.
    """

    max_retries: int = 3
    memory_factor: float = 1.5
    memory_ceiling: int = 8000
    unknown_memory: int = 2000
    walltime_factor: float = 2.0
    walltime_ceiling: int = 48
    max_excluded_sites: int = 3
    exclude_sites: bool | None = None
    split_for_walltime: bool = True
    production_role: bool = False
    attempts_increase: int = 5

    def __post_init__(self) -> None:
        for name in ("max_retries", "max_excluded_sites", "memory_ceiling", "unknown_memory", "walltime_ceiling",
                     "attempts_increase"):
            value, least = getattr(self, name), 0 if name in ("max_retries", "max_excluded_sites") else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise PandaInputError(f"DefaultRetryPolicy: {name} must be an integer of at least {least}, "
                                      f"got {value!r}")
        for name in ("memory_factor", "walltime_factor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 1:
                raise PandaInputError(f"DefaultRetryPolicy: {name} must be a number above 1, got {value!r}")

    def __call__(self, diagnosis: Diagnosis, attempts_so_far: int) -> Decision:
        evidence = diagnosis.evidence
        if diagnosis.retry_refused:
            return Decision(STOP, f"{evidence}; PanDA accepts no further retry: {diagnosis.retry_refused[:300]}")
        if diagnosis.category == Category.USER_CODE:
            return self._user_code(diagnosis)
        if attempts_so_far >= self.max_retries:
            return Decision(STOP, f"{evidence}; all {self.max_retries} automatic retries used")
        if diagnosis.category == Category.LOST_FILES:
            return Decision(RECOVER, f"{evidence}; asking PanDA to recover them (a retry would only rerun failed "
                                     "files, not the lost ones)")
        refusal = _status_refusal(diagnosis)
        if refusal and not (diagnosis.category == Category.TOO_FEW_ATTEMPTS and diagnosis.status in INCREASABLE):
            return Decision(STOP, f"{evidence}; {refusal}")
        rule = {Category.MEMORY: self._memory, Category.WALLTIME: self._walltime, Category.SITE: self._site,
                Category.TOO_FEW_ATTEMPTS: self._attempts}.get(diagnosis.category, self._unknown)
        decision = rule(diagnosis, attempts_so_far)
        if (decision.action == RETRY and not decision.new_params and diagnosis.status == "exhausted"
                and not self.production_role):
            return Decision(STOP, f"{evidence}; not retried: PanDA takes a retry without new parameters of an "
                                  "exhausted task only from the production role")
        return decision

    # --- one rule per category ------------------------------------------------------------------

    def _user_code(self, diagnosis: Diagnosis) -> Decision:
        codes = ", ".join(str(c) for c in diagnosis.exit_codes[:3])
        what = f"the payload's own exit code ({codes})" if codes else "an error of the task's own code or definition"
        return Decision(STOP, f"{diagnosis.evidence}; not retried: {what} fails on every site, so another attempt "
                              "would only spend grid time. Fix the code and submit the task again", final=True)

    def _memory(self, diagnosis: Diagnosis, attempts_so_far: int) -> Decision:
        unit = diagnosis.ram_unit or "MB"
        current = diagnosis.ram_count
        if current is not None and current >= self.memory_ceiling:
            return Decision(STOP, f"{diagnosis.evidence}; ramCount is already {current} {unit}, at the policy's "
                                  f"ceiling of {self.memory_ceiling}: not retried (raise memory_ceiling if your "
                                  "sites offer more)")
        base = current if current is not None else self.unknown_memory
        new = min(_round_up(base * self.memory_factor), self.memory_ceiling)
        shown = str(current) if current is not None else f"unknown (taken as {base})"
        return Decision(RETRY, f"{diagnosis.evidence}; retrying with ramCount {shown} -> {new} {unit}",
                        {"ramCount": new})

    def _walltime(self, diagnosis: Diagnosis, attempts_so_far: int) -> Decision:
        if diagnosis.looping:
            return Decision(STOP, f"{diagnosis.evidence}; not retried: the pilot kills a job that writes no output for "
                                  "too long (a hung payload, most often). If it legitimately writes nothing for that "
                                  "long, retry it with loopingCheck=False", suggested={"loopingCheck": False})
        files = diagnosis.files_per_job
        if self.split_for_walltime and files and files > 1:
            new = max(1, files // 2)
            return Decision(RETRY, f"{diagnosis.evidence}; a retry cannot give jobs more time, so retrying with "
                                   f"shorter jobs: nFilesPerJob {files} -> {new}", {"nFilesPerJob": new})
        hours = diagnosis.max_walltime_hours
        if hours is None and diagnosis.max_walltime:
            hours = math.ceil(diagnosis.max_walltime / 3600)
        if hours is not None and hours >= self.walltime_ceiling:  # bound: nothing longer to suggest
            return Decision(STOP, f"{diagnosis.evidence}; not retried: a retry cannot give jobs more time (PanDA keeps "
                                  f"the old walltime), and the jobs already had {hours} h, the policy's ceiling of "
                                  f"{self.walltime_ceiling} h: make each job do less (nFilesPerJob, nEventsPerJob)")
        cannot = "not retried: a retry cannot give jobs more time (PanDA keeps the old walltime on a retry)"
        if hours is None:
            return Decision(STOP, f"{diagnosis.evidence}; {cannot}: resubmit the task with a longer maxWalltime "
                                  "(hours), or fewer files per job")
        new_hours = min(math.ceil(hours * self.walltime_factor), self.walltime_ceiling)
        return Decision(STOP, f"{diagnosis.evidence}; {cannot}: resubmit the task with maxWalltime {hours} -> "
                              f"{new_hours} h, or fewer files per job", suggested={"maxWalltime": new_hours})

    def _excludes(self, diagnosis: Diagnosis) -> bool:
        if self.exclude_sites is not None:
            return self.exclude_sites
        return (diagnosis.vo, diagnosis.prod_source_label) in SITE_EXCLUSION_BROKERS

    def _site(self, diagnosis: Diagnosis, attempts_so_far: int) -> Decision:
        evidence = diagnosis.evidence
        excluded = list(diagnosis.excluded_sites)
        fresh = [s for s in diagnosis.bad_sites if s not in excluded]
        if fresh and self._excludes(diagnosis):
            room = self.max_excluded_sites - len(excluded)
            if room <= 0:
                return Decision(STOP, f"{evidence}; not retried: the task already excludes {len(excluded)} sites "
                                      f"({', '.join(excluded)}), the policy's most ({self.max_excluded_sites})")
            added = fresh[:room]
            return Decision(RETRY, f"{evidence}; retrying without {', '.join(added)} (excludedSite "
                                   f"{', '.join(excluded) or 'none'} -> {', '.join(excluded + added)})",
                            {"excludedSite": excluded + added})
        why = ("the broker of this task (vo " + repr(diagnosis.vo) + ", prodSourceLabel "
               + repr(diagnosis.prod_source_label) + ") ignores excludedSite") if fresh else (
            "no site to exclude (jobs also finished there, or the sites are excluded already)")
        if attempts_so_far == 0:
            return Decision(RETRY, f"{evidence}; {why}: one plain retry, so the broker chooses again")
        return Decision(STOP, f"{evidence}; not retried again: {why}, and a plain retry did not help",
                        suggested={"excludedSite": excluded + fresh} if fresh else {})

    def _attempts(self, diagnosis: Diagnosis, attempts_so_far: int) -> Decision:
        evidence = diagnosis.evidence
        if diagnosis.status in INCREASABLE:
            if self.production_role:
                return Decision(INCREASE_ATTEMPTS, f"{evidence}; adding {self.attempts_increase} attempts per file",
                                increase=self.attempts_increase)
            return Decision(STOP, f"{evidence}; only the production role may add attempts to a running task")
        if diagnosis.status == "exhausted" and not self.production_role:
            return Decision(STOP, f"{evidence}; not retried: PanDA retries an exhausted task only for the production "
                                  "role")
        return Decision(RETRY, f"{evidence}; retrying: a task retry gives each file that used up its attempts 5 more")

    def _unknown(self, diagnosis: Diagnosis, attempts_so_far: int) -> Decision:
        if attempts_so_far == 0:
            return Decision(RETRY, f"{diagnosis.evidence}; no clear cause: one plain retry")
        return Decision(STOP, f"{diagnosis.evidence}; no clear cause, and a plain retry did not help: not retried "
                              "again")


def policy_for(retry_policy: RetryPolicy | None = None, auto_retries: int = 0,
               retry_new_params: Mapping[str, Any] | None = None) -> RetryPolicy | None:
    """The policy an operator runs: its own ``retry_policy``, else :class:`SimplePolicy` for
    ``auto_retries`` > 0, else None (no automatic retry). ``retry_policy`` with ``auto_retries``
    is refused (which would count?); ``retry_new_params`` alone keeps its other uses."""
    if retry_policy is not None:
        if auto_retries:
            raise PandaInputError("give auto_retry_policy or auto_retries (with retry_new_params), not both")
        if not callable(retry_policy):
            raise PandaInputError(f"auto_retry_policy must be callable as policy(diagnosis, attempts_so_far), got "
                                  f"{retry_policy!r:.60}")
        return retry_policy
    if auto_retries:
        return SimplePolicy(auto_retries, dict(retry_new_params or {}))
    return None
