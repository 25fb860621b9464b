"""Why a PanDA task's attempt failed, as a shifter reads it: task-level facts first, then a bounded
sample of its jobs. Pure: no I/O, no Airflow; the caller reads and feeds in.

The caller reads the task's details (``task/get_detailed_info``: ``status``, ``errorDialog``,
``nFiles``, ``nFilesFinished``, ``nFilesFailed``, ``ramCount``, ``raw_task_params``, ...) and at
most :data:`MAX_SAMPLE` of its jobs (the newest; ``job/get_description_incl_archive``), never the
whole job list of a 100,000-job task. :func:`diagnose` sorts each failed job into one cause and the
attempt into one :class:`Category`, with the evidence as counts ("37 of 40 failed jobs: pilot error
1212 (payload ran out of memory) at 3 sites").

Where the codes and their meanings come from (read, not remembered):

- The pilot's error codes (``pilotErrorCode``): ``pilot/common/errorcodes.py`` of PanDAWMS/pilot3 at
  commit b46eb4dc346087f8d54b04ee99837c7d6f0ac218, and the codes added since in the pilot's
  development branch (PalNilsson/pilot3 at 93eb6dfb09968d30e68909c30b1c3eba080c3419: 1237
  PAYLOADOOMKILL, 1377 CVMFSISNOTALIVE, 1379 PREEMPTION, 1383, 1386, 1388, 1390, 1391
  LOOPINGJOBCVMFS). How the pilot sets them: ``pilot/user/atlas/diagnose.py``
  (``interpret_payload_exit_info``: 1212 when the payload's stderr/stdout says it ran out of memory;
  1220 when the payload failed without a known cause) and ``ErrorCodes.resolve_transform_error``
  (1305 for any other non-zero payload exit code). ``transExitCode`` is the payload's own exit
  code and ``exeErrorCode``/``exeErrorDiag`` what the transform's job report says (pilot
  ``update_job_data``): neither has a fixed meaning outside the payload.
- The server's own codes, panda-server 1.0.4 (the package installed for the real-server tier,
  ``.real_panda/venv/lib/python3.11/site-packages/pandaserver``): ``taskBufferErrorCode`` from
  ``pandaserver/taskbuffer/ErrorCode.py``, ``jobDispatcherErrorCode`` from
  ``pandaserver/jobdispatcher/ErrorCode.py`` (set by ``jobdispatcher/Watcher.py``: lost heartbeat,
  timeouts), ``ddmErrorCode`` from ``pandaserver/dataservice/ErrorCode.py`` (Setupper, Adder),
  ``supErrorCode`` from ``pandaserver/taskbuffer/SupErrors.py``.
- Which codes PanDA itself acts on per job: ``pandaserver/taskbuffer/retryModule.py`` applies the
  ``RETRYERRORS``/``RETRYACTIONS`` rules of the server's database (actions ``no_retry``,
  ``limit_retry``, ``increase_memory``, ``increase_memory_xtimes``, ``increase_cputime``,
  ``reduce_input_per_job``); the rules are data of each deployment, none ship with the server.
  ``job_complex_module.py`` (``retryJob``) retries an analysis job once on pilot codes 1200, 1201,
  1213, and treats taskBufferErrorCode 105/106/107 as "already retried". This module decides at
  task level, after the task has ended, on top of that.
- The task-level messages: ``task_complex_module.py`` ``retryTask_JEDI`` ("... No further retries are
  accepted.", "retry was rejected due to too many attempts ...") and JEDI's
  ``pandajedi/jedipprocess/PostProcessorBase.py`` ("exhausted since the task was incomplete and
  didn't reach the goal").
- Lost files: ``pandaserver/dataservice/RecoverLostFilesCore.py`` (the file recovery request)
  compares the task's *finished output* files with what Rucio still holds. No job error says a file
  was lost afterwards, so only the caller can say so (``lost_files=``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: At most this many jobs are read and looked at (the newest ones; the hook's ``get_task_jobs``
#: reads as many by default). The diagnosis never asks for, nor reads, more than this.
MAX_SAMPLE = 200
#: The share of the counted failed jobs one category needs to name the attempt's cause.
DOMINANT_SHARE = 0.5


class Category:
    """What the attempt failed of (plain strings: they go into XCom and logs as they are)."""

    MEMORY = "memory"
    WALLTIME = "walltime"
    SITE = "site"  # a site or its storage: stage-in, stage-out, worker node, lost heartbeat
    USER_CODE = "user_code"
    LOST_FILES = "lost_files"
    TOO_FEW_ATTEMPTS = "too_few_attempts"
    UNKNOWN = "unknown"
    ALL = (MEMORY, WALLTIME, SITE, USER_CODE, LOST_FILES, TOO_FEW_ATTEMPTS, UNKNOWN)


# --- one failed job's cause -------------------------------------------------------------------

#: Kinds of job-level cause. ``payload``: the payload's own non-zero exit (a user-code failure when it
#: happens everywhere, a site's when only at one site while jobs finish elsewhere). ``looping``: the
#: pilot killed it for writing nothing (a walltime-class failure). ``superseded`` and ``killed``
#: are not failures of the job's own and are left out of the counts.
MEMORY, WALLTIME, LOOPING, SITE, STORAGE, USER, PAYLOAD, SUPERSEDED, KILLED, UNKNOWN = (
    "memory", "walltime", "looping", "site", "storage", "user", "payload", "superseded", "killed", "unknown")

_CATEGORY_OF_KIND = {MEMORY: Category.MEMORY, WALLTIME: Category.WALLTIME, LOOPING: Category.WALLTIME,
                     SITE: Category.SITE, STORAGE: Category.SITE, USER: Category.USER_CODE,
                     PAYLOAD: Category.USER_CODE, UNKNOWN: Category.UNKNOWN}

# Pilot error codes, from pilot3 ``pilot/common/errorcodes.py`` (PanDAWMS/pilot3@b46eb4dc; codes
# marked "dev" from PalNilsson/pilot3@93eb6dfb). The meaning is the pilot's own message, shortened.
PILOT_CODES: dict[int, tuple[str, str]] = {
    # memory: PAYLOADOUTOFMEMORY, PAYLOADEXCEEDMAXMEM, PAYLOADOOMKILL (dev), BADALLOC
    1212: (MEMORY, "payload ran out of memory"),
    1235: (MEMORY, "payload exceeded maximum allowed memory"),
    1237: (MEMORY, "payload killed by cgroup OOM"),
    1223: (MEMORY, "transform failed due to bad_alloc"),
    # time: REACHEDMAXTIME, SIGXCPU (the CPU-time limit's signal); LOOPINGJOB
    1213: (WALLTIME, "reached batch system time limit"),
    1204: (WALLTIME, "killed by signal SIGXCPU"),
    1150: (LOOPING, "looping job killed by pilot"),
    # stage-in, stage-out, data access
    1099: (STORAGE, "stage-in failed"),
    1100: (STORAGE, "replica not found"),
    1133: (STORAGE, "no storage defined for the activity"),
    1137: (STORAGE, "stage-out failed"),
    1141: (STORAGE, "md5sum mismatch on output file"),
    1145: (STORAGE, "md5sum mismatch on input file"),
    1151: (STORAGE, "stage-in timed out"),
    1152: (STORAGE, "stage-out timed out"),
    1171: (STORAGE, "adler32 mismatch on input file"),
    1172: (STORAGE, "adler32 mismatch on output file"),
    1180: (STORAGE, "Globus system error during stage-in"),
    1181: (STORAGE, "Globus system error during stage-out"),
    1242: (STORAGE, "query checksum is not supported"),
    1313: (STORAGE, "no protocol defined for storage endpoint"),
    1321: (STORAGE, "failed to get client location for Rucio"),
    1322: (STORAGE, "failed to get replicas from Rucio"),
    1323: (STORAGE, "unknown copy tool"),
    1326: (STORAGE, "no matching replicas found"),
    1329: (STORAGE, "failed to construct SURL for non-deterministic ddm"),
    1331: (STORAGE, "input file missing on storage"),
    1338: (STORAGE, "authentication failure during stage-in"),
    1361: (STORAGE, "remote file could not be opened"),
    1362: (STORAGE, "xrdcp was unable to open file"),
    1364: (STORAGE, "no credentials for S3 transfer"),
    1366: (STORAGE, "failure during checksum calculation"),
    1368: (STORAGE, "remote file open timed out"),
    1383: (STORAGE, "authentication failure during stage-out"),  # dev
    1388: (STORAGE, "XRootD access restricted"),  # dev
    # the worker node, the site's setup, the batch system
    1098: (SITE, "not enough local space"),
    1110: (SITE, "failed during payload setup"),
    1115: (SITE, "NFS SQLite locking problems"),
    1116: (SITE, "pilot could not download queuedata"),
    1117: (SITE, "pilot found non-valid queuedata"),
    1163: (SITE, "grid proxy not valid"),
    1177: (SITE, "VOMS proxy not valid"),
    1186: (SITE, "software directory does not exist"),
    1199: (SITE, "failed to create local directory"),
    1200: (SITE, "terminated by unknown kill signal"),
    1201: (SITE, "killed by signal SIGTERM"),
    1202: (SITE, "killed by signal SIGQUIT"),
    1206: (SITE, "killed by signal SIGBUS"),
    1207: (SITE, "killed by signal SIGUSR1"),
    1208: (SITE, "killed by signal SIGINT"),  # dev
    1211: (SITE, "missing installation"),
    1306: (SITE, "container: general failure"),
    1307: (SITE, "container: no more loop devices"),
    1308: (SITE, "container: bind point not mounted"),
    1309: (SITE, "container: failed to mount image"),
    1316: (SITE, "Rucio service unavailable"),
    1318: (SITE, "failed to communicate with server"),
    1324: (SITE, "service not available"),
    1325: (SITE, "Singularity not installed"),
    1327: (SITE, "network unreachable"),
    1332: (SITE, "black hole detected in file system"),
    1333: (SITE, "no space left on device"),
    1334: (SITE, "setup failed with a fatal exception"),
    1340: (SITE, "container: NEWUSER namespace failed"),
    1341: (SITE, "bad queue configuration"),
    1344: (SITE, "resource temporarily unavailable"),
    1345: (SITE, "container: failed to create user namespace"),
    1348: (SITE, "container: resource temporarily unavailable"),
    1358: (SITE, "missing release setup in unpacked container"),
    1359: (SITE, "PanDA queue is not active"),
    1369: (SITE, "Frontier error"),
    1372: (SITE, "Apptainer not installed"),  # dev
    1373: (SITE, "certificate has expired"),  # dev
    1377: (SITE, "CVMFS is not responding"),  # dev
    1378: (SITE, "lsetup timed out"),  # dev
    1379: (SITE, "job was preempted"),  # dev
    1384: (SITE, "queue not set up for containers"),  # dev
    1386: (SITE, "PanDA queue is not online"),  # dev
    1390: (SITE, "payload setup verification timed out"),  # dev
    1391: (SITE, "looping job with CVMFS I/O errors on the node"),  # dev
    # the task's own code or definition: no site change fixes these
    1104: (USER, "user work directory too large"),
    1106: (USER, "payload log or stdout too big"),
    1124: (USER, "output file too large"),
    1165: (USER, "local output file is missing"),
    1168: (USER, "total file size too large"),
    1190: (USER, "LFN too long"),
    1191: (USER, "file size cannot be zero"),
    1203: (USER, "killed by signal SIGSEGV"),
    1328: (USER, "payload segmentation fault"),
    1335: (USER, "user code not available on PanDA server (resubmit with new code)"),
    1346: (USER, "transform not found"),
    1349: (USER, "unrecognized transform arguments"),
    1350: (USER, "empty output file"),
    1355: (USER, "core dump"),
    1371: (USER, "output file name contains illegal characters"),  # dev
    # not a failure of the job's own: a clone ran, or PanDA or the user killed it
    1234: (SUPERSEDED, "clone job already executed"),
    1336: (SUPERSEDED, "job already running elsewhere"),
    1144: (KILLED, "killed by PanDA server"),
    1205: (KILLED, "killed by user"),
}
# Pilot codes that only say "the payload failed" (PAYLOADEXECUTIONFAILURE, UNKNOWNPAYLOADFAILURE,
# UNKNOWNTRFFAILURE, PAYLOADEXECUTIONEXCEPTION, UNRECOGNIZEDTRFSTDERR): the payload's exit code says more.
PILOT_PAYLOAD_CODES: dict[int, str] = {
    1305: "failed to execute payload",
    1220: "payload failed for an unknown reason",
    1315: "unknown transform failure",
    1310: "exception during payload execution",
    1351: "unrecognized fatal error in transform stderr",
}
# taskBufferErrorCode, from panda-server 1.0.4 pandaserver/taskbuffer/ErrorCode.py.
TASKBUFFER_CODES: dict[int, tuple[str, str]] = {
    100: (KILLED, "killed"),
    101: (STORAGE, "transfer timeout"),
    102: (SITE, "expired"),
    103: (KILLED, "aborted"),
    105: (SUPERSEDED, "reassigned by re-brokerage"),
    106: (SUPERSEDED, "reassigned by server-side retry"),
    107: (SUPERSEDED, "retried by pilot"),
    130: (SUPERSEDED, "fast re-brokerage"),
    200: (SUPERSEDED, "job cloning: lock not taken"),
    300: (SITE, "worker done before the job"),
}
# jobDispatcherErrorCode, from pandaserver/jobdispatcher/ErrorCode.py (set by Watcher.py).
DISPATCHER_CODES: dict[int, tuple[str, str]] = {
    100: (SITE, "lost heartbeat"),
    101: (SITE, "job recovery failed"),
    102: (SITE, "no reply from the pilot after dispatch"),
    103: (STORAGE, "timeout in holding"),
    104: (STORAGE, "timeout in transferring"),
    105: (SITE, "timeout"),
}
# ddmErrorCode, from pandaserver/dataservice/ErrorCode.py (Setupper and Adder: data management).
DDM_CODES: dict[int, tuple[str, str]] = {
    100: (STORAGE, "setupper failed"),
    101: (STORAGE, "GUID problem"),
    200: (STORAGE, "adder failed to register output"),
    201: (STORAGE, "subscription failed"),
    203: (STORAGE, "location registration failed"),
    204: (STORAGE, "missing nEvents"),
    205: (STORAGE, "inconsistent GUID"),
    206: (STORAGE, "wrong RSE configuration"),
}
# supErrorCode, from pandaserver/taskbuffer/SupErrors.py.
SUP_CODES: dict[int, tuple[str, str]] = {
    1: (SITE, "invalid batch ID"),
    2: (SITE, "worker already done"),
}

#: Job statuses of a job that ended badly (as :data:`airflow_provider_panda.api.JOB_FAILED`) and of one that succeeded.
JOB_FAILED = frozenset({"failed", "closed", "cancelled"})
JOB_FINISHED = "finished"

#: ``errorDialog`` texts with which PanDA refuses any further retry (``retryTask_JEDI``).
RETRY_REFUSED_MARKS = ("No further retries are accepted", "was rejected due to too many attempts")
#: ``errorDialog`` of a task exhausted before its goal (JEDI ``PostProcessorBase.doPreCheck``).
GOAL_NOT_REACHED_MARK = "didn't reach the goal"


@dataclass(frozen=True)
class Cause:
    """Why one job failed: its kind, the field and code that say so, and a label for the evidence."""

    kind: str
    label: str
    code: int | None = None
    source: str | None = None


def _int(value: Any) -> int | None:
    """A code as the server sends it (int, numeric text, "NULL", None) as an int, 0 for none."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _table_cause(source: str, noun: str, code: int, table: Mapping[int, tuple[str, str]]) -> Cause:
    kind, meaning = table.get(code, (UNKNOWN, ""))
    return Cause(kind, f"{noun} {code}" + (f" ({meaning})" if meaning else ""), code, source)


def job_cause(job: Mapping[str, Any]) -> Cause:
    """The one cause of a failed job. Order: a job replaced or killed (taskBufferErrorCode) first;
    then the pilot's specific code; then the server's data-management, dispatcher and supplemental
    codes; then the payload's own exit (``transExitCode``, ``exeErrorCode``, or a pilot code that
    only says the payload failed); then any other code, as unknown."""
    taskbuffer = _int(job.get("taskBufferErrorCode")) or 0
    if TASKBUFFER_CODES.get(taskbuffer, (None,))[0] in (SUPERSEDED, KILLED):
        return _table_cause("taskBufferErrorCode", "task buffer error", taskbuffer, TASKBUFFER_CODES)
    pilot = _int(job.get("pilotErrorCode")) or 0
    if pilot in PILOT_CODES:
        return _table_cause("pilotErrorCode", "pilot error", pilot, PILOT_CODES)
    for source, noun, table in (("ddmErrorCode", "DDM error", DDM_CODES),
                                ("jobDispatcherErrorCode", "dispatcher error", DISPATCHER_CODES),
                                ("supErrorCode", "supervisor error", SUP_CODES)):
        code = _int(job.get(source)) or 0
        if code:
            cause = _table_cause(source, noun, code, table)
            return cause if cause.kind != UNKNOWN else Cause(SITE, cause.label, code, source)
    exit_code = _int(job.get("transExitCode")) or 0
    exe = _int(job.get("exeErrorCode")) or 0
    if exit_code:
        return Cause(PAYLOAD, f"payload exit code {exit_code}", exit_code, "transExitCode")
    if exe:
        return Cause(PAYLOAD, f"payload error {exe}", exe, "exeErrorCode")
    if pilot in PILOT_PAYLOAD_CODES:
        return Cause(PAYLOAD, f"pilot error {pilot} ({PILOT_PAYLOAD_CODES[pilot]})", pilot, "pilotErrorCode")
    if pilot:
        return Cause(UNKNOWN, f"pilot error {pilot}", pilot, "pilotErrorCode")
    if taskbuffer:
        return _table_cause("taskBufferErrorCode", "task buffer error", taskbuffer, TASKBUFFER_CODES)
    brokerage = _int(job.get("brokerageErrorCode")) or 0
    if brokerage:
        return Cause(UNKNOWN, f"brokerage error {brokerage}", brokerage, "brokerageErrorCode")
    return Cause(UNKNOWN, f"job {job.get('jobStatus') or 'failed'} without an error code")


# --- the attempt's diagnosis ------------------------------------------------------------------


@dataclass(frozen=True)
class Diagnosis:
    """One failed attempt, diagnosed: what it failed of, the evidence, and the facts a policy needs.

    ``failed_jobs`` counts the failed jobs of the sample that failed of their own (jobs replaced by
    a retry or killed are in ``not_counted``); ``matching_jobs`` how many of them show the
    category's cause. ``sites`` are where those jobs ran, ``bad_sites`` the ones among them where no
    sampled job finished (the candidates for ``excludedSite``), ``ok_sites`` where sampled jobs
    finished. ``ram_count`` (in ``ram_unit``, usually MB per core) and ``max_walltime`` (seconds, the
    largest job limit in the sample) are the current values when known; ``files_per_job`` and
    ``max_walltime_hours`` the task's ``nFilesPerJob`` and ``maxWalltime`` (hours, JEDI's
    ``JediTaskSpec.getMaxWalltime``) parameters; ``excluded_sites`` what the task already excludes.
    """

    category: str
    evidence: str
    status: str | None = None
    error_dialog: str | None = None
    failed_jobs: int = 0
    matching_jobs: int = 0
    sampled_jobs: int = 0
    not_counted: int = 0
    causes: tuple[tuple[str, int], ...] = ()
    sites: tuple[str, ...] = ()
    bad_sites: tuple[str, ...] = ()
    ok_sites: tuple[str, ...] = ()
    exit_codes: tuple[int, ...] = ()
    ram_count: int | None = None
    ram_unit: str | None = None
    max_walltime: int | None = None
    files_per_job: int | None = None
    max_walltime_hours: int | None = None
    excluded_sites: tuple[str, ...] = ()
    looping: bool = False
    at_last_attempt: int = 0
    n_files: int | None = None
    n_files_finished: int | None = None
    n_files_failed: int | None = None
    lost_files: int = 0
    vo: str | None = None
    prod_source_label: str | None = None
    #: PanDA's own refusal of any further retry (its ``errorDialog``), when it said so.
    retry_refused: str | None = None

    @property
    def summary(self) -> str:
        """One line for a log: the task-level facts, then the evidence."""
        parts = []
        if self.status:
            parts.append(f"task {self.status}")
        if self.n_files:
            parts.append(f"{self.n_files_failed or 0} of {self.n_files} input files failed")
        parts.append(self.evidence)
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (lists, not tuples) for XCom and the final report."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name == "causes":
                value = [[label, count] for label, count in value]
            elif isinstance(value, tuple):
                value = list(value)
            out[name] = value
        return out


def _sites(value: Any) -> tuple[str, ...]:
    """``excludedSite`` as the task holds it: a list, or comma-separated text (after a retry)."""
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple)):
        return ()
    return tuple(dict.fromkeys(str(s).strip() for s in value if str(s).strip()))


def _positive(value: Any) -> int | None:
    number = _int(value)
    return number if number is not None and number > 0 else None


def _ram_per_core(job: Mapping[str, Any]) -> int | None:
    """A job's memory request per core: ``minRamCount`` (MB for the job) over its ``coreCount``."""
    ram = _positive(job.get("minRamCount"))
    if ram is None:
        return None
    cores = _positive(job.get("coreCount")) or 1
    return -(-ram // cores)


def _label_counts(causes: Iterable[Cause]) -> tuple[tuple[str, int], ...]:
    return tuple(Counter(c.label for c in causes).most_common())


def _what(counts: tuple[tuple[str, int], ...], limit: int = 3) -> str:
    """``pilot error 1212 (...)`` alone, or ``pilot error 1212 (...) x30, pilot error 1235 (...) x7``."""
    if len(counts) == 1:
        return counts[0][0]
    shown = ", ".join(f"{label} x{count}" for label, count in counts[:limit])
    return shown + (f" and {len(counts) - limit} other errors" if len(counts) > limit else "")


def _where(site_counts: Counter[str]) -> str:
    if not site_counts:
        return "at an unknown site"
    if len(site_counts) == 1:
        return f"at {next(iter(site_counts))}"
    return f"at {len(site_counts)} sites"


def diagnose(info: Mapping[str, Any] | None, jobs: Iterable[Mapping[str, Any] | None] | None, *,
             status: str | None = None, lost_files: int = 0) -> Diagnosis:
    """Diagnose one failed attempt.

    :param info: the task's details (``task/get_detailed_info``), or None when they could not be read.
    :param jobs: a sample of the task's jobs, newest last, as ``job/get_description_incl_archive``
        returns them (None entries for unknown IDs are skipped); only the last :data:`MAX_SAMPLE` are
        looked at. Failed jobs give the causes, finished ones the sites where the work succeeded.
    :param status: the status the wait ended with (else ``info["status"]``).
    :param lost_files: how many of the task's output files the caller knows to be lost (e.g. from a
        dry-run file recovery request); PanDA's jobs cannot tell.
    """
    info = info or {}
    status = status or (info.get("status") if isinstance(info.get("status"), str) else None)
    dialog = str(info["errorDialog"]) if info.get("errorDialog") else None
    params = info.get("raw_task_params") if isinstance(info.get("raw_task_params"), Mapping) else {}
    sample = [j for j in list(jobs or [])[-MAX_SAMPLE:] if isinstance(j, Mapping)]
    failed = [j for j in sample if j.get("jobStatus") in JOB_FAILED]
    finished = [j for j in sample if j.get("jobStatus") == JOB_FINISHED]
    ok_sites = tuple(sorted({str(j["computingSite"]) for j in finished if j.get("computingSite")}))
    causes = [(job, job_cause(job)) for job in failed]
    counted = [(job, cause) for job, cause in causes if cause.kind not in (SUPERSEDED, KILLED)]
    ram_from_jobs = [r for r in (_ram_per_core(j) for j in sample) if r]
    ram_task = _positive(info.get("ramCount"))
    ram_count = max([r for r in (ram_task, *ram_from_jobs) if r], default=None)
    walltimes = [w for w in (_positive(j.get("maxWalltime")) for j in sample) if w]
    at_last = sum(1 for job, _ in counted
                  if _positive(job.get("maxAttempt")) and (_int(job.get("attemptNr")) or 0) >= _int(job["maxAttempt"]))
    refused = next((dialog for mark in RETRY_REFUSED_MARKS if dialog and mark in dialog), None)
    facts: dict[str, Any] = dict(
        status=status, error_dialog=dialog, sampled_jobs=len(sample), failed_jobs=len(counted),
        not_counted=len(causes) - len(counted), ok_sites=ok_sites, ram_count=ram_count,
        ram_unit=info.get("ramUnit") if isinstance(info.get("ramUnit"), str) else None,
        max_walltime=max(walltimes, default=None),
        files_per_job=_positive(params.get("nFilesPerJob")), max_walltime_hours=_positive(params.get("maxWalltime")),
        excluded_sites=_sites(params.get("excludedSite")),
        at_last_attempt=at_last, n_files=_int(info.get("nFiles")), n_files_finished=_int(info.get("nFilesFinished")),
        n_files_failed=_int(info.get("nFilesFailed")), lost_files=max(int(lost_files or 0), 0),
        vo=info.get("vo") if isinstance(info.get("vo"), str) else None,
        prod_source_label=info.get("prodSourceLabel") if isinstance(info.get("prodSourceLabel"), str) else None,
        retry_refused=refused, causes=_label_counts(c for _, c in counted))
    skipped = f" ({facts['not_counted']} replaced or killed jobs not counted)" if facts["not_counted"] else ""

    if facts["lost_files"] and (status == "done" or not counted):
        return Diagnosis(Category.LOST_FILES, f"{facts['lost_files']} output files lost after the task produced "
                                              "them (the jobs did not fail for it)", **facts)
    if not counted:
        if status == "exhausted" and dialog and GOAL_NOT_REACHED_MARK in dialog:
            return Diagnosis(Category.TOO_FEW_ATTEMPTS, f"PanDA says: {dialog[:300]}", **facts)
        where = f"none of the {len(sample)} sampled jobs failed of its own" if sample else "no job was read"
        return Diagnosis(Category.UNKNOWN, where + skipped + (f"; PanDA says: {dialog[:300]}" if dialog else ""),
                         **facts)

    # A payload failure only at one site, while jobs finished elsewhere, is that site's.
    payload_sites = {str(j.get("computingSite") or "") for j, c in counted if c.kind == PAYLOAD}
    site_bound_payload = (len(payload_sites) == 1 and "" not in payload_sites and bool(ok_sites)
                          and not payload_sites & set(ok_sites))
    by_category: dict[str, list[tuple[Mapping[str, Any], Cause]]] = {}
    for job, cause in counted:
        category = Category.SITE if cause.kind == PAYLOAD and site_bound_payload else _CATEGORY_OF_KIND[cause.kind]
        by_category.setdefault(category, []).append((job, cause))
    order = (Category.MEMORY, Category.WALLTIME, Category.USER_CODE, Category.SITE, Category.UNKNOWN)
    top = max(order, key=lambda c: (len(by_category.get(c, ())), -order.index(c)))
    matching = by_category.get(top, [])
    total = len(counted)
    site_counts = Counter(str(j["computingSite"]) for j, _ in matching if j.get("computingSite"))
    counts = _label_counts(c for _, c in matching)
    evidence = f"{len(matching)} of {total} failed jobs: {_what(counts)} {_where(site_counts)}{skipped}"
    facts.update(matching_jobs=len(matching), sites=tuple(site_counts),
                 looping=any(c.kind == LOOPING for _, c in matching),
                 exit_codes=tuple(code for code, _ in Counter(
                     c.code for _, c in matching if c.kind == PAYLOAD and c.code is not None).most_common()))

    if top == Category.UNKNOWN or len(matching) < DOMINANT_SHARE * total:
        deterministic = sum(len(by_category.get(c, ())) for c in (Category.MEMORY, Category.WALLTIME,
                                                                  Category.USER_CODE))
        progress = bool(facts["n_files_finished"]) or bool(finished)
        if progress and deterministic < DOMINANT_SHARE * total and (at_last * 2 >= total or status == "exhausted"):
            return Diagnosis(Category.TOO_FEW_ATTEMPTS,
                             f"{at_last} of {total} failed jobs at their last attempt, with mixed errors "
                             f"({_what(facts['causes'])}) while other files finished{skipped}", **facts)
        return Diagnosis(Category.UNKNOWN, f"no single cause: {_what(facts['causes'])} in {total} failed jobs"
                                           f"{skipped}", **facts)

    if top == Category.SITE:
        bad = tuple(s for s, _ in site_counts.most_common() if s not in ok_sites)
        facts["bad_sites"] = bad
        spread = ", ".join(f"{s} x{n}" for s, n in site_counts.most_common(5))
        evidence = f"{len(matching)} of {total} failed jobs: {_what(counts)} at {spread}"
        if site_bound_payload:
            evidence += " only"
        if ok_sites:
            evidence += f"; jobs finished at {', '.join(ok_sites[:5])}" + (" and more" if len(ok_sites) > 5 else "")
        evidence += skipped
    return Diagnosis(top, evidence, **facts)
