"""The prun side of the builder: ``PrunTask`` holds prun's options as typed fields and makes the task
parameter map prun (panda-client 2.2.0) makes for them (ports of PrunScript.main, CommonArgs' splitting
rules, AthenaUtils' release and platform rules, MiscUtils.makeJediJobParam and
PsubUtils.convertParamStrToJediParam).

Refusals are where prun refuses (its own checks, or the checks it makes before a real submission such
as the output dataset's name) or where PanDA would reject the task; each message says which. Where prun
accepts an option and changes or ignores it (``--nFilesPerJob`` over ``--maxNFilesPerJob``, ``--maxAttempt``
over 50), the builder does the same and warns, as prun does.
"""

from __future__ import annotations

import ast
import contextvars
import copy
import dataclasses
import json
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

from airflow_provider_panda.exceptions import PandaInputError

#: The prun release whose task parameter map the builder reproduces (and names in ``processingType``).
PRUN_VERSION = "2.2.0"
#: prun's default for ``sourceURL`` when no VO is given (the cache server); the operator uses the connection's.
DEFAULT_SOURCE_URL = "https://pandacache.cern.ch"
MAX_CONTAINER_NAME = 132  # DDM's limit on a dataset container name (prun: checkOutDsName, checkTaskParam)
MAX_MERGE_CONTAINER_NAME = 120  # prun's limit on --outDS with --mergeOutput (checkOutDsName)
MAX_OUTPUTS = 10  # prun's default limit of output files per job
MAX_FILES_PER_JOB = 200  # prun --maxNFilesPerJob default
MAX_ATTEMPTS = 50  # prun sends --maxAttempt only up to this
#: Placeholders prun's runGen expands in ``--exec`` (besides secondary stream names); ``%DB:<ds>:<file>``
#: names a DBRelease.
EXEC_PLACEHOLDERS = ("IN", "OUT", "RNDM", "SKIPEVENTS", "FIRSTEVENT", "MAXEVENTS", "SEGMENT_NAME", "CORE_NUMBER",
                     "DB")
#: Athena projects built with CMake whose release prun reads from the shell with --useAthenaPackages
#: (AthenaUtils.getAthenaVer's git-based projects, besides those starting with Athena or Analysis).
ATHENA_PROJECTS = ("AthDerivations", "AthSimulation", "AthDerivation", "AthAnalysis", "AthGeneration", "AtlasStats")

_DS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]*/?")  # Rucio DID names (ATLAS scopes: user.<nick>, group.<g>)
_IN_DS_NAME = re.compile(r"([A-Za-z0-9._\-]+:)?[A-Za-z0-9*][A-Za-z0-9._\-*]*/?")  # scope:name, wildcards allowed
_USER_PREFIX = re.compile(r"user\.([A-Za-z0-9_\-]+)\.[A-Za-z0-9_\-]")
_GROUP_PREFIX = re.compile(r"group(\d{2})?\.([A-Za-z0-9_\-]+)\.[A-Za-z0-9_\-]")  # prun --official
_SITE = re.compile(r"[A-Za-z0-9_\-]+")
_EXCLUDED_SITE = re.compile(r"[A-Za-z0-9_\-*]+")  # prun's help: "OPQ*" excludes OPQ<blah>
_DOTTED_WORD = re.compile(r"[A-Za-z0-9_\-]+([.:][A-Za-z0-9_\-]+)*")  # cloud, working group: words joined by . or :
_VO = re.compile(r"[a-z][a-z0-9_\-.]*")
_LABEL = re.compile(r"[a-z][a-z0-9_]*")  # user, test, managed, rc_test2, ...
_STREAM = re.compile(r"[A-Z][A-Z0-9_]*")
_PLACEHOLDER = re.compile(r"%([A-Z][A-Z0-9_]+)")
_RELEASE = re.compile(r"\d+\.\d+\.\d+")
# prun's check_invalid_char: characters a file or dataset name may not hold
_BAD_NAME_CHARS = "%|;><?'\"()$@:=&^#\\[]{}`"
#: How to give several input datasets: said by every in_ds error.
SEVERAL_IN_DS = ("several datasets go as a list (in_ds=['scope:a', 'scope:b']), as one string of names separated by "
                 "commas ('scope:a,scope:b'), or as a template rendering either (an upstream task's list XCom renders "
                 "as a list literal, which is read as the list)")
#: Builder fields are rendered with Jinja comments switched off: ``{#`` is text (bash's ``${#array[@]}``).
NO_JINJA_COMMENTS = {"comment_start_string": "{#!panda-no-comment!", "comment_end_string": "!panda-no-comment!#}"}
#: What every template error says.
TEMPLATE_HINT = ("builder fields are Jinja templates: '{{' and '{%' start Jinja, '{#' is text; for a literal '{%' "
                 "or '{{' write {{ '{%' }}, or wrap the text in {% raw %}...{% endraw %}")

# True while a builder is made from rendered fields (their text is no longer a template)
_RENDERED: contextvars.ContextVar[bool] = contextvars.ContextVar("panda_prun_rendered", default=False)


@dataclass
class SecondaryInput:
    """A secondary input stream (prun ``--secondaryDSs StreamName:nFiles:DatasetName[:Pattern[:nSkip]]``;
    written with ``#`` separators when the dataset has a scope or the pattern a ``:``)."""

    stream: str
    dataset: str
    n_files_per_job: int
    pattern: str = ""
    n_skip: int = 0

    template_fields: ClassVar[Sequence[str]] = ("dataset", "pattern")

    def check(self) -> None:
        if not isinstance(self.stream, str) or not _STREAM.fullmatch(self.stream) or self.stream == "IN":
            raise PandaInputError(f"secondary stream name must be upper-case letters, digits or _ (not IN), "
                                  f"got {self.stream!r:.60}")
        _check_in_ds(self.dataset, f"secondary dataset of stream {self.stream}")
        _count(self.n_files_per_job, f"n_files_per_job of stream {self.stream}")
        if self.n_skip is not None and (isinstance(self.n_skip, bool) or not isinstance(self.n_skip, int)
                                        or self.n_skip < 0):
            raise PandaInputError(f"n_skip of stream {self.stream} must be an integer >= 0, got {self.n_skip!r:.40}")
        if not isinstance(self.pattern, str) or any(c in self.pattern for c in ",#"):
            raise PandaInputError(f"pattern of stream {self.stream} must be a string without ',' or '#' (prun "
                                  "splits --secondaryDSs at them)")

    def prun_option(self) -> str:
        """This stream as one item of prun's ``--secondaryDSs`` (``#`` separators when a field holds ``:``)."""
        sep = "#" if ":" in self.dataset or ":" in (self.pattern or "") else ":"
        parts = [self.stream, str(self.n_files_per_job), self.dataset]
        if self.pattern or self.n_skip:
            parts.append(self.pattern or "")
        if self.n_skip:
            parts.append(str(self.n_skip))
        return sep.join(parts)


@dataclass(kw_only=True)
class PrunTask:
    """A user task as ``prun`` describes it; :meth:`to_params` makes PanDA's task parameter map.

    Each field is a prun option (docs/builder.md has the table). The main ones:

    :param exec: the command (prun ``--exec``), with ``%IN``, ``%OUT``, ``%RNDM:<n>``, ``%SKIPEVENTS``,
        ``%FIRSTEVENT``, ``%MAXEVENTS``, ``%SEGMENT_NAME``, ``%CORE_NUMBER``, ``%DB:<dataset>:<file>`` and
        secondary stream names. Any other ``%`` is shell text, passed on as prun does.
    :param out_ds: the output dataset container (``user.<nickname>.<name>``, ``group.<group>.<name>`` with
        ``official=True``; a trailing ``/`` is added); it is also the task's name, so make it unique per run.
    :param in_ds: input dataset(s), read as one primary stream (prun's comma-separated ``--inDS``): a name,
        names separated by commas, a list of names, or a list literal (how an upstream's list XCom renders).
    :param secondary: secondary input streams (``%<STREAM>`` in ``exec``).
    :param outputs: output file names (``[suffix:]name``, ``*`` allowed, or ``regex|...``).
    :param sandbox: a directory whose files the job needs: packed and uploaded at run time (prun's
        working directory). None: the job runs ``exec`` (or the container) without a sandbox.
    :param build: run prun's build step on the sandbox (prun's default); else ``--noBuild`` (the default here).
    :param extra: raw task parameters merged last, for what the builder does not cover.
    """

    exec: str = ""
    out_ds: str = ""
    in_ds: str | Sequence[str] | None = None
    secondary: Sequence[SecondaryInput] = ()
    outputs: Sequence[str] = ()
    n_files: int | None = None
    n_files_per_job: int | None = None
    n_jobs: int | None = None
    n_events: int | None = None
    n_events_per_job: int | None = None
    n_events_per_file: int | None = None
    site: str | Sequence[str] | None = None
    excluded_sites: Sequence[str] = ()
    cloud: str | None = None
    memory: int | None = None
    fixed_memory: bool = False
    walltime_hours: int | None = None
    cores: int | None = None
    container_image: str | None = None
    architecture: str | None = None
    max_attempt: int | None = None
    working_group: str | None = None
    vo: str | None = None
    prod_source_label: str | None = None
    nickname: str | None = None
    sandbox: str | None = None
    build: bool = False
    unique_name: bool = True
    # --- the release (non-container jobs) ---
    athena_tag: str | None = None
    cmt_config: str | None = None
    use_athena_packages: bool = False
    # --- inputs ---
    write_input_to_txt: str | Mapping[str, str] | None = None
    max_files_per_job: int | None = None
    n_gb_per_job: int | str | None = None
    match: str | None = None
    anti_match: str | None = None
    n_skip_files: int | None = None
    input_file_list: str | Sequence[str] | None = None
    force_staged: bool = False
    skip_empty_input: bool = False
    avoid_vp: bool = False
    # --- outputs ---
    merge_output: bool = False
    merge_script: str | None = None
    merge_log: bool = False
    merge_single_file: bool = False
    n_gb_per_merge_job: int | str | None = None
    merge_trans_path: str | None = None
    allow_no_output: str | Sequence[str] | None = None
    dest_se: str | None = None
    official: bool = False
    # --- submission ---
    no_email: bool = False
    disable_auto_retry: bool = False
    os_matching: bool = False
    use_new_code: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    #: Counts: positive integers, or templates that render to one (e.g. ``"{{ params.n_jobs }}"``).
    count_fields: ClassVar[Sequence[str]] = (
        "n_files", "n_files_per_job", "n_jobs", "n_events", "n_events_per_job", "n_events_per_file", "memory",
        "walltime_hours", "cores", "max_attempt", "max_files_per_job")
    #: Sizes in GB: positive integers or "MAX" (prun's default), or templates that render to one.
    size_fields: ClassVar[Sequence[str]] = ("n_gb_per_job", "n_gb_per_merge_job")
    #: True/False options (prun's flags).
    flag_fields: ClassVar[Sequence[str]] = (
        "fixed_memory", "build", "unique_name", "use_athena_packages", "force_staged", "skip_empty_input", "avoid_vp",
        "merge_output", "merge_log", "merge_single_file", "official", "no_email", "disable_auto_retry",
        "os_matching", "use_new_code")
    #: Optional text options.
    text_fields: ClassVar[Sequence[str]] = ("athena_tag", "cmt_config", "match", "anti_match", "merge_script",
                                            "merge_trans_path", "dest_se")
    template_fields: ClassVar[Sequence[str]] = (
        "exec", "out_ds", "in_ds", "secondary", "outputs", "site", "excluded_sites", "cloud", "container_image",
        "architecture", "working_group", "vo", "prod_source_label", "nickname", "sandbox", "extra",
        "write_input_to_txt", "input_file_list", "allow_no_output", *text_fields, *count_fields, *size_fields,
        "n_skip_files")

    def __post_init__(self) -> None:
        # What can be checked before templates are rendered is checked now (DAG-parse time).
        self.check(rendered=False)
        if not _RENDERED.get():
            self._check_templates()
        self._warn()

    # --- checks ---------------------------------------------------------------------------------

    def check(self, rendered: bool = True) -> None:
        """Raise PandaInputError for anything prun or PanDA would refuse; names only once rendered."""
        def ready(value: Any) -> bool:
            return rendered or not (isinstance(value, str) and _templated(value))

        if not isinstance(self.exec, str) or not self.exec.strip():
            raise PandaInputError("exec (the command to run, prun --exec) must be a non-empty string")
        if not isinstance(self.out_ds, str) or not self.out_ds.strip():
            raise PandaInputError("out_ds (the output dataset, prun --outDS) is required")
        for name in self.count_fields:
            value = getattr(self, name)
            if value is not None and ready(value):
                _count(value, name)
        for name in self.size_fields:
            value = getattr(self, name)
            if value is not None and ready(value) and value != "MAX":
                _count(value, name, " or 'MAX' (prun refuses other values)")
        if self.n_skip_files is not None and ready(self.n_skip_files) and (
                isinstance(self.n_skip_files, bool) or not isinstance(self.n_skip_files, int)
                or self.n_skip_files < 0):
            raise PandaInputError(f"n_skip_files must be an integer >= 0, got {self.n_skip_files!r:.40}")
        for name in self.flag_fields:
            if not isinstance(getattr(self, name), bool):
                raise PandaInputError(f"{name} must be True or False, got {getattr(self, name)!r:.40}")
        for name in self.text_fields:
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise PandaInputError(f"{name} must be a string, got {type(value).__name__} {value!r:.60}")
        if not isinstance(self.extra, Mapping) or not all(isinstance(k, str) for k in self.extra):
            raise PandaInputError("extra must be a dict of raw task parameters with string keys")
        reserved = {"taskName", "jobParameters", "log"} & set(self.extra)
        if reserved:
            raise PandaInputError(f"extra may not set {sorted(reserved)}: the builder makes them "
                                  "(use task_params for a hand-written map)")
        if not isinstance(self.outputs, (list, tuple)) or not all(isinstance(o, str) for o in self.outputs):
            raise PandaInputError("outputs must be a list of file names")
        if not isinstance(self.secondary, (list, tuple)) or not all(
                isinstance(s, SecondaryInput) for s in self.secondary):
            raise PandaInputError("secondary must be a list of SecondaryInput")
        if self._builds() and self.sandbox is None:
            raise PandaInputError("build=True needs a sandbox directory to build")
        if self.sandbox is not None and (not isinstance(self.sandbox, (str, os.PathLike)) or not str(self.sandbox)):
            raise PandaInputError("sandbox must be a directory path")
        if ready(self.out_ds):
            self._out_ds()
        inputs = self._inputs()
        for name in inputs:
            if ready(name):
                _check_in_ds(name, "in_ds", hint=SEVERAL_IN_DS)
                if name == "None":  # what a template reading an empty XCom renders
                    raise PandaInputError(f"in_ds is 'None' (a template that read an empty XCom?); {SEVERAL_IN_DS}")
        if not inputs and self.in_ds not in (None, "") and ready(self.in_ds):
            raise PandaInputError(f"in_ds {self.in_ds!r:.140} names no dataset (an upstream that produced none?); "
                                  "leave in_ds out for a task without input")
        if ready(self.out_ds) and all(ready(o) for o in self.outputs):
            self._outputs()
        if ready(self.exec):
            self._db_release()
        for secondary in self.secondary:
            if ready(secondary.dataset):
                secondary.check()
        streams = [s.stream for s in self.secondary]
        if len(set(streams)) != len(streams):
            raise PandaInputError(f"secondary stream names must be unique, got {streams}")
        for name in ("cloud", "working_group"):
            value = getattr(self, name)
            if value is not None and ready(value) and not (isinstance(value, str) and _DOTTED_WORD.fullmatch(value)):
                raise PandaInputError(f"{name} must be a name of letters, digits, _ or -, got {value!r:.60}")
        for site in self._sites():
            if ready(site) and not _SITE.fullmatch(site):
                raise PandaInputError(f"site names are letters, digits, _ or -, got {site!r:.60}")
        for site in self._excluded():
            if ready(site) and not _EXCLUDED_SITE.fullmatch(site):
                raise PandaInputError(f"excluded site names are letters, digits, _, - or the wildcard *, "
                                      f"got {site!r:.60}")
        if self.vo is not None and ready(self.vo) and not (isinstance(self.vo, str) and _VO.fullmatch(self.vo)):
            raise PandaInputError(f"vo must be a lower-case VO name such as 'atlas', got {self.vo!r:.60}")
        if self.prod_source_label is not None and ready(self.prod_source_label) and not (
                isinstance(self.prod_source_label, str) and _LABEL.fullmatch(self.prod_source_label)):
            raise PandaInputError(f"prod_source_label must be a label such as 'user' or 'test', "
                                  f"got {self.prod_source_label!r:.40}")
        if self.container_image is not None and ready(self.container_image) and not (
                isinstance(self.container_image, str) and self.container_image.strip()
                and not re.search(r"\s", self.container_image)):
            raise PandaInputError(f"container_image must be an image name without spaces, "
                                  f"got {self.container_image!r:.80}")
        if self.cmt_config is not None and ready(self.cmt_config) and not re.fullmatch(r"[^\s,]+", self.cmt_config):
            raise PandaInputError(f"cmt_config must be a platform name such as 'x86_64-el9-gcc13-opt', "
                                  f"got {self.cmt_config!r:.60}")
        if ready(self.athena_tag) and ready(self.cmt_config):
            self._release()
        if self.architecture is not None and ready(self.architecture):
            if not isinstance(self.architecture, str):
                raise PandaInputError(f"architecture must be a string, got {self.architecture!r:.60}")
            if not self.container_image:
                _architecture(self.architecture, None)
        if ready(self.write_input_to_txt):
            self._write_input_to_txt()
        if ready(self.allow_no_output):
            self._allow_no_output()
        if ready(self.input_file_list):
            self._check_input_file_list()
        gb = self.n_gb_per_job
        if gb is not None and ready(gb):
            if gb != "MAX" and self.n_files_per_job is not None:
                raise PandaInputError("n_gb_per_job and n_files_per_job split the input two ways: give one "
                                      "(prun refuses: '--nFilesPerJob and --nGBPerJob must be used exclusively')")
            if self.n_events_per_job is not None:
                raise PandaInputError("n_gb_per_job and n_events_per_job split the input two ways: give one "
                                      "(prun refuses: 'split by events and split by file size can not be used "
                                      "simultaneously')")

    def _check_templates(self) -> None:
        """Refuse a field Jinja cannot read, when the DAG is parsed rather than when the task runs."""
        import jinja2

        env = jinja2.Environment().overlay(**NO_JINJA_COMMENTS)

        def parse(value: Any, name: str) -> None:
            if isinstance(value, str) and _templated(value):
                try:
                    env.parse(value)
                except jinja2.TemplateSyntaxError as exc:
                    raise PandaInputError(f"{name}: Jinja cannot read {value!r:.120}: {exc.message}; "
                                          f"{TEMPLATE_HINT}") from None
            elif isinstance(value, (list, tuple)):
                for item in value:
                    parse(item, name)
            elif isinstance(value, Mapping):
                for item in value.values():
                    parse(item, name)

        for name in self.template_fields:
            value = getattr(self, name)
            if name == "secondary":
                value = [[s.dataset, s.pattern] for s in value]
            parse(value, name)

    def _warn(self) -> None:
        """What prun accepts but changes or ignores, said as prun says it (at parse time and when built)."""
        def ready(value: Any) -> bool:
            return not (isinstance(value, str) and _templated(value))

        if isinstance(self.max_attempt, int) and self.max_attempt > MAX_ATTEMPTS:
            _warn(f"max_attempt={self.max_attempt} is over prun's limit of {MAX_ATTEMPTS}: prun leaves "
                  "maxAttempt out of the task (PanDA's default applies), and so does the builder")
        per_job, most = self.n_files_per_job, self._max_files()
        if isinstance(per_job, int) and isinstance(most, int) and per_job > most:
            _warn(f"n_files_per_job={per_job} is more than max_files_per_job={most}: prun sets it to {most} "
                  "('--nFilesPerJob cannot be larger than --maxNFilesPerJob'), and so does the builder; "
                  "raise max_files_per_job for more")
        if ready(self.in_ds) and not self._inputs():
            for name in ("n_files", "n_files_per_job", "n_events_per_file", "n_skip_files", "match", "anti_match",
                         "input_file_list", "skip_empty_input"):
                if getattr(self, name) not in (None, 0, "", False):
                    _warn(f"{name} has no effect without an input dataset (in_ds): prun ignores it")
            if ready(self.exec) and re.search(r"%IN\b", self.exec):
                _warn("exec uses %IN but the task has no input dataset (in_ds): prun passes it on, and the job "
                      "gets no file names for it")
        if ready(self.exec):
            known = set(EXEC_PLACEHOLDERS) | {s.stream for s in self.secondary}
            for name in _PLACEHOLDER.findall(self.exec):
                if name not in known and name.startswith(("IN", "OUT")):  # a typo, or a stream not declared
                    _warn(f"exec uses %{name}, which is neither a prun placeholder nor a secondary stream of the "
                          "task: prun passes it on as it is")

    def _inputs(self) -> list[str]:
        """The input dataset names, in order, as prun's comma-separated ``--inDS`` lists them."""
        if self.in_ds is None or self.in_ds == "":
            return []
        if isinstance(self.in_ds, str):
            return _in_ds_names(self.in_ds)
        if isinstance(self.in_ds, (list, tuple)) and all(isinstance(d, str) for d in self.in_ds):
            return [name for item in self.in_ds for name in _in_ds_names(item)]
        raise PandaInputError(f"in_ds must be dataset names, got {type(self.in_ds).__name__} {self.in_ds!r:.80}; "
                              f"{SEVERAL_IN_DS}")

    def _sites(self) -> list[str]:
        """The sites as given (prun's ``--site``, split at commas, in order)."""
        if self.site is None or self.site == "":
            return []
        sites = [self.site] if isinstance(self.site, str) else self.site
        if not isinstance(sites, (list, tuple)) or not all(isinstance(s, str) for s in sites):
            raise PandaInputError("site must be a queue name or a list of them")
        return [s.strip() for item in sites for s in item.split(",") if s.strip()]

    def _excluded(self) -> list[str]:
        if not isinstance(self.excluded_sites, (list, tuple)) or not all(isinstance(s, str) for s in
                                                                          self.excluded_sites):
            raise PandaInputError("excluded_sites must be a list of queue names")
        return _unique(s.strip() for item in self.excluded_sites for s in item.split(","))

    def _label(self) -> str:
        return self.prod_source_label or "user"

    def _builds(self) -> bool:
        """Whether the job builds the sandbox first (prun: never in a container, --containerImage sets --noBuild)."""
        return self.build and not self.container_image

    def _merging(self) -> bool:
        return self.merge_output or bool(self.merge_script)

    def _max_files(self) -> Any:
        return MAX_FILES_PER_JOB if self.max_files_per_job is None else self.max_files_per_job

    def _out_ds(self) -> str:
        """The output container name (with its ``/``), checked against PanDA's and Rucio's rules."""
        name = self.out_ds.strip()
        bad = next((c for c in _BAD_NAME_CHARS + "*" if c in name), None)
        if bad is not None:
            raise PandaInputError(f"out_ds {name!r:.140} holds {bad!r}, which dataset names may not contain")
        if not name.isascii() or not _DS_NAME.fullmatch(name):
            raise PandaInputError(f"out_ds {name!r:.140} must be letters, digits, '.', '_' or '-' (one trailing '/')")
        if ".." in name:
            raise PandaInputError(f"out_ds {name!r:.140} has an empty field ('..')")
        if self.official:
            if _GROUP_PREFIX.match(name) is None:
                raise PandaInputError(f"out_ds of an official task must start with 'group.<group>.' (the group of "
                                      f"your production role; prun refuses other names with --official), "
                                      f"got {name!r:.140}")
        elif self._label() == "user":
            match = _USER_PREFIX.match(name)
            if match is None:
                raise PandaInputError(f"out_ds of a user task must start with 'user.<nickname>.' (prun refuses other "
                                      f"names; 'group.<group>.' needs official=True), got {name!r:.140}")
            if self.nickname and match.group(1) != self.nickname:
                raise PandaInputError(f"out_ds must start with 'user.{self.nickname}.', got {name!r:.140}")
        container = name if name.endswith("/") else name + "/"
        if self._merging() and not self.official and len(container) > MAX_MERGE_CONTAINER_NAME:
            raise PandaInputError(f"dataset container {container!r:.60}... is {len(container)} characters; prun takes "
                                  f"at most {MAX_MERGE_CONTAINER_NAME} with merged outputs (merge_output)")
        for full in (container, container[:-1] + ".log/"):
            if len(full) > MAX_CONTAINER_NAME:
                raise PandaInputError(f"dataset container {full!r:.60}... is {len(full)} characters; DDM takes at "
                                      f"most {MAX_CONTAINER_NAME} (out_ds and out_ds.log/ must fit)")
        return container

    def _outputs(self) -> list[tuple[str, str, str]]:
        """(file name as given, LFN template, dataset container) per output, as prun makes them."""
        if len(self.outputs) > MAX_OUTPUTS:
            raise PandaInputError(f"at most {MAX_OUTPUTS} outputs per job (prun's limit), got {len(self.outputs)}")
        out_ds = self._out_ds()
        parts = out_ds.split(".")
        prefix = "{}.{}".format(*parts[:2]) if len(parts) > 2 else out_ds[:-1]
        made: list[tuple[str, str, str]] = []
        suffixes: list[str] = []
        index = 0
        for item in self.outputs:
            item = item.replace(" ", "")
            suffix, lfn = "", item
            if ":" in item:
                if item.count(":") != 1:
                    raise PandaInputError(f"output {item!r:.80} must be 'name' or 'suffix:name' (prun fails on "
                                          "a second ':')")
                suffix, lfn = item.split(":")
                if suffix in suffixes:
                    raise PandaInputError(f"output dataset suffix {suffix!r} is used for several outputs (prun "
                                          "refuses it)")
                suffixes.append(suffix)
            if not lfn:
                raise PandaInputError(f"output {item!r:.80} has no file name")
            if lfn.startswith("regex|"):
                value = lfn
                if not suffix:
                    suffix = str(index)
                    index += 1
            else:
                new = lfn.replace("*", "XYZ") + ".tgz" if "*" in lfn else lfn
                if "/" in new:
                    raise PandaInputError(f"output file name {lfn!r:.80} may not contain '/' (prun refuses it)")
                bad = next((c for c in _BAD_NAME_CHARS if c in new), None)
                if bad is not None or not new.isascii():
                    raise PandaInputError(f"output file name {lfn!r:.80} holds {bad or 'non-ASCII'!r}, "
                                          "which file names may not contain (prun refuses it)")
                value = f"{prefix}.$JEDITASKID._${{SN/P}}.{new}"
                if not suffix:
                    suffix = new
            dataset = f"{out_ds[:-1]}_{suffix}/"
            if len(dataset) > MAX_CONTAINER_NAME:
                raise PandaInputError(f"output container {dataset!r:.60}... is {len(dataset)} characters; DDM takes "
                                      f"at most {MAX_CONTAINER_NAME} (shorten out_ds or the output name)")
            if any(dataset == d for _, _, d in made):
                raise PandaInputError(f"two outputs would go to the same dataset {dataset!r}")
            made.append((lfn, value, dataset))
        return made

    def _db_release(self) -> tuple[str, str] | None:
        """(dataset, release) of a ``%DB:<dataset>:<file>`` (or ``%DB:LATEST``) in exec, as prun reads it."""
        match = re.search("%DB:([^ '\";]+)", self.exec)
        if match is None:
            return None
        release = match.group(1)
        if ":" not in release and release != "LATEST":
            raise PandaInputError(f"exec's %DB:{release} must be %DB:<dataset>:<file> or %DB:LATEST "
                                  "(prun refuses it: 'invalid argument for --dbRelease')")
        dataset = release.split(":")[0]
        return ("DBR_LATEST" if dataset == "LATEST" else dataset), release

    def _release(self) -> tuple[str, str, str]:
        """(transUses, cacheVer, nightVer) of athena_tag, as prun's parse_athena_tag reads it."""
        if not self.athena_tag:
            if self.use_athena_packages:
                raise PandaInputError(
                    "use_athena_packages=True needs athena_tag='<project>,<release>' (e.g. 'AnalysisBase,24.2.35') "
                    "and cmt_config: prun reads both from the Athena set up in your shell (asetup), and the "
                    "builder has no shell")
            return "", "", ""
        athena, cache, night = _athena_versions(self.athena_tag)
        if (athena or cache) and not self.cmt_config:
            raise PandaInputError(
                f"athena_tag={self.athena_tag!r:.60} needs cmt_config (e.g. 'x86_64-el9-gcc13-opt'): prun takes it "
                "from $CMTCONFIG and refuses the task without it ('environment variable CMTCONFIG is undefined. "
                "Please set --cmtConfig'); the builder has no shell to read it from")
        if self.use_athena_packages:
            items = [i for i in self.athena_tag.split(",") if i]
            projects = [i for i in items if not _RELEASE.fullmatch(i)]
            releases = [i for i in items if _RELEASE.fullmatch(i)]
            if len(items) != 2 or len(releases) != 1 or not _cmake_project(projects[0]):
                raise PandaInputError(
                    f"use_athena_packages=True needs athena_tag='<project>,<release>' of a CMake release (e.g. "
                    f"'AnalysisBase,24.2.35', 'AthAnalysis,21.2.170'), got {self.athena_tag!r:.60}: it stands for "
                    "the release prun reads from the Athena set up in your shell")
        return athena, cache, night

    def _write_input_to_txt(self) -> str:
        """``StreamName:FileName,...`` as prun passes it to the job (``%`` removed)."""
        value = self.write_input_to_txt
        if value is None or value == "":
            return ""
        if isinstance(value, Mapping):
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
                raise PandaInputError("write_input_to_txt must map stream names to file names (strings)")
            text = ",".join(f"{k}:{v}" for k, v in value.items())
        elif isinstance(value, str):
            text = value
        else:
            raise PandaInputError("write_input_to_txt must be 'IN:input.txt[,STREAM:file.txt]' or a dict "
                                  "{'IN': 'input.txt'}")
        text = text.replace("%", "")
        for item in text.split(","):
            stream, _, name = item.partition(":")
            if item.count(":") != 1 or not stream or not name or re.search(r"\s", item):
                raise PandaInputError(f"write_input_to_txt item {item!r:.60} must be StreamName:FileName "
                                      "(prun refuses it: 'invalid StreamName:FileName in --writeInputToTxt')")
        return text

    def _allow_no_output(self) -> list[str]:
        """The patterns of outputs allowed not to be produced (prun's comma-separated --allowNoOutput)."""
        value = self.allow_no_output
        if value is None or value == "":
            return []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(p, str) for p in value):
            raise PandaInputError("allow_no_output must be a list of patterns (regular expressions)")
        patterns = [p for item in value for p in item.split(",")]
        for pattern in patterns:
            try:
                re.compile("^.*" + pattern + "$")
            except re.error as exc:
                raise PandaInputError(f"allow_no_output pattern {pattern!r:.60} is not a regular expression "
                                      f"({exc}; prun fails on it)") from None
        return patterns

    def _check_input_file_list(self) -> None:
        value = self.input_file_list
        if value is None or value == "":
            return
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                _list_literal(value, "input_file_list")
            return
        if not isinstance(value, (list, tuple)) or not all(isinstance(n, str) for n in value):
            raise PandaInputError("input_file_list must be a local file listing file names (prun's --inputFileList) "
                                  "or a list of file names")

    def _input_files(self) -> list[str]:
        """The names of input_file_list: a list, a list literal, or a local file read as prun reads it."""
        value = self.input_file_list
        if value is None or value == "":
            return []
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                names = _list_literal(value, "input_file_list")
            else:
                try:
                    with open(value) as handle:
                        names = handle.read().split("\n")
                except OSError as exc:
                    raise PandaInputError(f"input_file_list {value!r:.120} cannot be read ({exc.strerror}); prun "
                                          "fails too: give the path of a file on the machine that builds the task "
                                          "(the Airflow worker), or the names as a list") from None
        else:
            names = list(value)
        return [n.strip() for n in names if n.strip()]

    # --- the prun command line --------------------------------------------------------------------

    def prun_args(self) -> list[str]:
        """The prun options that describe this task (what ``cliParams`` records)."""
        args = ["--exec", self.exec, "--outDS", self.out_ds]
        if self._inputs():
            args += ["--inDS", ",".join(self._inputs())]
        if self.secondary:
            args += ["--secondaryDSs", ",".join(s.prun_option() for s in self.secondary)]
        if self.outputs:
            args += ["--outputs", ",".join(self.outputs)]
        for name, option in (("n_files", "--nFiles"), ("n_files_per_job", "--nFilesPerJob"), ("n_jobs", "--nJobs"),
                             ("n_events", "--nEvents"), ("n_events_per_job", "--nEventsPerJob"),
                             ("n_events_per_file", "--nEventsPerFile")):
            if getattr(self, name) is not None:
                args += [option, str(getattr(self, name))]
        if self._sites():
            args += ["--site", ",".join(self._sites())]
        if self._excluded():
            args += ["--excludedSite", ",".join(self._excluded())]
        if self.memory is not None:
            args += ["--memory", str(self.memory)]
        if self.fixed_memory:
            args += ["--fixedRamCount"]
        if self.walltime_hours is not None:
            args += ["--maxWalltime", str(self.walltime_hours)]
        if self.cores is not None:
            args += ["--nCore", str(self.cores)]
        if self.container_image:
            args += ["--containerImage", self.container_image]
        if self.architecture:
            args += ["--architecture", self.architecture]
        if self.max_attempt is not None:
            args += ["--maxAttempt", str(self.max_attempt)]
        if self.working_group:
            args += ["--workingGroup", self.working_group]
        if self.vo:
            args += ["--vo", self.vo]
        if self.prod_source_label:
            args += ["--prodSourceLabel", self.prod_source_label]
        if self.use_athena_packages:
            args += ["--useAthenaPackages"]
        for name, option in (("athena_tag", "--athenaTag"), ("cmt_config", "--cmtConfig")):
            if getattr(self, name):
                args += [option, getattr(self, name)]
        if self.write_input_to_txt:
            value = self.write_input_to_txt
            args += ["--writeInputToTxt", value if isinstance(value, str) else self._write_input_to_txt()]
        for name, option in (("max_files_per_job", "--maxNFilesPerJob"), ("n_gb_per_job", "--nGBPerJob"),
                             ("n_skip_files", "--nSkipFiles")):
            if getattr(self, name) is not None:
                args += [option, str(getattr(self, name))]
        for name, option in (("match", "--match"), ("anti_match", "--antiMatch")):
            if getattr(self, name):
                args += [option, getattr(self, name)]
        if self.input_file_list:  # a file's path as prun takes it; names given here are recorded in its place
            value = self.input_file_list
            local_file = isinstance(value, str) and not value.lstrip().startswith("[")
            args += ["--inputFileList", value if local_file else ",".join(self._input_files())]
        if self.merge_output:
            args += ["--mergeOutput"]
        if self.merge_script:
            args += ["--mergeScript", self.merge_script]
        for name, option in (("merge_log", "--mergeLog"), ("merge_single_file", "--mergeSingleFile")):
            if getattr(self, name):
                args += [option]
        if self.n_gb_per_merge_job is not None:
            args += ["--nGBPerMergeJob", str(self.n_gb_per_merge_job)]
        if self.merge_trans_path:
            args += ["--mergeTransPath", self.merge_trans_path]
        if self.allow_no_output:
            value = self.allow_no_output
            args += ["--allowNoOutput", value if isinstance(value, str) else ",".join(value)]
        if self.dest_se:
            args += ["--destSE", self.dest_se]
        for name, option in (("official", "--official"), ("force_staged", "--forceStaged"),
                             ("skip_empty_input", "--skipEmptyInput"), ("avoid_vp", "--avoidVP"),
                             ("no_email", "--noEmail"), ("disable_auto_retry", "--disableAutoRetry"),
                             ("os_matching", "--osMatching"), ("use_new_code", "--useNewCode")):
            if getattr(self, name):
                args += [option]
        if not self.build and not self.container_image:
            args += ["--noBuild"]  # (a container never builds)
        if not self.unique_name:
            args += ["--allowTaskDuplication"]
        return args

    # --- the task parameter map -------------------------------------------------------------------

    def to_params(self, source_url: str = DEFAULT_SOURCE_URL, sandbox_name: str | None = None) -> dict[str, Any]:
        """The task parameter map prun makes for these options.

        :param source_url: where the sandbox lives (``scheme://host[:port]`` of the cache or server).
        :param sandbox_name: the uploaded sandbox's name (see :func:`upload_sandbox`); needed with a sandbox.
        """
        self.check()
        if self.sandbox is not None and not sandbox_name:
            raise PandaInputError("the task has a sandbox directory: upload it first (sandbox_name)")
        if sandbox_name is not None and not re.fullmatch(r"[A-Za-z0-9._\-]+", sandbox_name):
            raise PandaInputError(f"sandbox_name must be a plain file name, got {sandbox_name!r:.80}")
        out_ds = self._out_ds()
        inputs = self._inputs()
        label = self._label()
        container = bool(self.container_image)
        athena, cache, night = self._release()
        cmt = self.cmt_config or None
        params: dict[str, Any] = {"taskName": out_ds}
        if self.unique_name:
            params["uniqueTaskName"] = True
        params["vo"] = self.vo or "atlas"
        params["architecture"] = (self.architecture or "") if container else _architecture(self.architecture, cmt)
        params["transUses"] = athena
        params["transHome"] = "AnalysisTransforms" + cache + night if athena else None
        params["processingType"] = f"panda-client-{PRUN_VERSION}-jedi-run"
        params["prodSourceLabel"] = label
        site, included = self._site_params()
        params["site"] = site
        params["excludedSite"] = self._excluded()
        params["includedSite"] = included
        if self.n_gb_per_job not in (None, "MAX"):
            params["nGBPerJob"] = self.n_gb_per_job
        self._split(params, no_input=not inputs)
        params["cliParams"] = _command_line(["prun", *self.prun_args()])
        if self.no_email:
            params["noEmail"] = True
        if self.os_matching:
            params["osMatching"] = True
        import platform

        params["osInfo"] = platform.platform()  # the submitting host's, as prun records it
        if self.disable_auto_retry:
            params["disableAutoRetry"] = 1
        if self.working_group:
            params["workingGroup"] = self.working_group.split(".")[0].split(":")[0]
        if self.official:
            params["official"] = True
        params["nMaxFilesPerJob"] = self._max_files()
        if self.use_new_code:
            params["fixedSandbox"] = sandbox_name
        if self.walltime_hours:
            params["maxWalltime"] = self.walltime_hours
        if self.memory:
            params["ramCount"] = self.memory
            params["ramCountUnit"] = "MBPerCoreFixed" if self.fixed_memory else "MBPerCore"
        if self.cores and self.cores > 1:
            params["coreCount"] = self.cores
        params["respectSplitRule"] = True
        if self.max_attempt and self.max_attempt <= MAX_ATTEMPTS:
            params["maxAttempt"] = self.max_attempt
        params["sourceURL"] = _source_url(source_url)
        if container:
            params["container_name"] = self.container_image
            if not self.use_athena_packages:  # prun: runGen sets the release up inside the container
                params["multiStepExec"] = {
                    "preprocess": {"command": "${TRF}", "args": "--preprocess ${TRF_ARGS}"},
                    "postprocess": {"command": "${TRF}", "args": "--postprocess ${TRF_ARGS}"},
                    "containerOptions": {
                        "containerExec": 'echo "=== cat exec script ==="; cat __run_main_exec.sh; echo; '
                                         'echo "=== exec script ==="; /bin/sh __run_main_exec.sh',
                        "containerImage": self.container_image,
                    },
                }
        log_ds = out_ds[:-1] + ".log/"
        params["log"] = {"dataset": log_ds, "container": log_ds, "type": "template", "param_type": "log",
                         "value": f"{log_ds[:-1]}.$JEDITASKID.${{SN}}.log.tgz"}
        if self._merging() and self.merge_log:
            merged = copy.deepcopy(params["log"])
            merged_ds = re.sub(r"\.log/", ".merge_log/", log_ds)
            merged.update({"dataset": merged_ds, "container": merged_ds, "param_type": "output", "mergeOnly": True,
                           "value": re.sub(r"\.log\.tgz", ".merge_log.tgz", params["log"]["value"])})
            params["log_merge"] = merged
        params["jobParameters"] = self._job_parameters(out_ds, inputs, sandbox_name, cmt)
        if inputs:
            params["dsForIN"] = ",".join(inputs)
        else:
            params["noInput"] = True
        if self.secondary:
            params["reuseSecOnDemand"] = True
        if self.force_staged:
            params["useLocalIO"] = 1
        if self.avoid_vp:
            params["avoidVP"] = True
        if self._builds():
            build = f"-i ${{IN}} -o ${{OUT}} --sourceURL ${{SURL}} -r {self._run_dir()} " + self._release_options(cmt)
            params["buildSpec"] = {"prodSourceLabel": self.prod_source_label or "panda", "archiveName": sandbox_name,
                                   "jobParameters": build}
        if self._merging():
            params["mergeSpec"] = {"useLocalIO": 1, "jobParameters": self._merge_parameters(sandbox_name, cmt)}
            if self.merge_trans_path:  # else the server's (PanDA sets runMerge's for VO atlas)
                params["mergeSpec"]["transPath"] = self.merge_trans_path
            params["mergeOutput"] = True
            if self.n_gb_per_merge_job not in (None, "MAX"):
                params["nGBPerMergeJob"] = self.n_gb_per_merge_job
        if self.cloud:
            params["cloud"] = self.cloud
        params.update(self.extra)
        return params

    def _site_params(self) -> tuple[str | None, list[str] | None]:
        """(site, includedSite) as prun makes them: several sites are included sites; AUTO is no site."""
        sites = self._sites()
        if len(sites) > 1:
            return None, _unique(sites)
        if sites and sites[0] != "AUTO":
            return sites[0], None
        return None, None

    def _run_dir(self) -> str:
        # prun: the directory it runs in, relative to the sandbox's top (the Athena work area's with packages)
        return "./" if self.use_athena_packages else "."

    def _release_options(self, cmt: str | None) -> str:
        """The release's options of runGen's and buildGen's command lines, in prun's order."""
        text = "--useAthenaPackages --useCMake " if self.use_athena_packages else ""
        return text + (f"--cmtConfig {cmt} " if cmt not in ("", "NULL", None) else "")

    def _merge_parameters(self, sandbox_name: str | None, cmt: str | None) -> str:
        text = f"-r {self._run_dir()} "
        if self.merge_script:
            text += f'-j "{self.merge_script}" '
        if self.merge_single_file:
            text += "--mergeSingleFile "
        if cmt not in ("", "NULL", None):
            text += f"--cmtConfig {cmt} "
        if self.use_athena_packages:
            text += "--useAthenaPackages --useCMake "
        if self._builds():
            text += "-l ${LIB} "
        else:
            text += (f"-a {sandbox_name} " if sandbox_name else "") + "--sourceURL ${SURL} "
        text += "${TRN_OUTPUT:OUTPUT} "
        return text + ("${TRN_LOG_MERGE:LOG_MERGE}" if self.merge_log else "${TRN_LOG:LOG}")

    def _split(self, params: dict[str, Any], no_input: bool) -> None:
        """prun's --maxNFilesPerJob ceiling, set_n_files_from_n_jobs and set_events_task_params."""
        n_jobs = self.n_jobs or -1
        n_events = self.n_events or -1
        per_job = self.n_events_per_job or -1
        per_file = self.n_events_per_file or 0
        n_files = self.n_files or 0
        files_per_job = self.n_files_per_job or -1
        files_per_job = min(files_per_job, self._max_files())
        if n_jobs > 0:
            if per_job > 0 and per_file > 0:
                n_files = max(1, per_job * n_jobs // per_file)
            if files_per_job > 0 and n_files == 0:
                n_files = files_per_job * n_jobs
            if files_per_job < 0 and n_files > 0:
                files_per_job = max(1, n_files // n_jobs)
        if no_input:
            if n_events > 0:
                params["nEvents"] = n_events
                if n_jobs > 0:
                    params["nEventsPerJob"] = max(1, n_events // n_jobs)
                elif per_job > 0:
                    params["nEventsPerJob"] = per_job
            elif per_job > 0:
                params["nEvents"] = per_job * max(1, n_jobs)
                params["nEventsPerJob"] = per_job
            else:
                params["nEvents"] = n_jobs if n_jobs > 0 else 1
                params["nEventsPerJob"] = 1
            return
        if self.skip_empty_input:
            params["skipEmptyInput"] = True
            if per_file <= 0:
                params["useRealNumEvents"] = True
        if n_files > 0:
            params["nFiles"] = n_files
        if files_per_job > 0:
            params["nFilesPerJob"] = files_per_job
        if per_job > 0:
            params["nEventsPerJob"] = per_job
            if per_file <= 0:
                params["useRealNumEvents"] = True
        if per_file > 0:
            params["nEventsPerFile"] = per_file
        if n_events > 0:
            params["nEvents"] = n_events
        elif n_jobs > 0 and per_job > 0:
            params["nEvents"] = n_jobs * per_job

    def _job_parameters(self, out_ds: str, inputs: list[str], sandbox_name: str | None,
                        cmt: str | None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = [
            {"type": "constant", "value": '-j "" --sourceURL ${SURL}'},
            {"type": "constant", "value": f"-r {self._run_dir()}"},
            {"type": "constant", "value": "__delimiter__", "hidden": True},
        ]
        if self._builds():
            items.append({"type": "constant", "value": "-l ${LIB}"})
        elif sandbox_name:
            items.append({"type": "constant", "value": f"-a {sandbox_name}"})
        outputs = self._outputs()
        if outputs:
            patterns = self._allow_no_output()
            out_map = {}
            quiet: list[str] = []
            for lfn, value, dataset in outputs:
                item: dict[str, Any] = {"type": "template", "value": value, "param_type": "output",
                                        "dataset": dataset, "container": dataset, "hidden": True}
                if self.dest_se:
                    item["destination"] = self.dest_se
                if any(p and re.search("^.*" + p + "$", value) for p in patterns):
                    item["allowNoOutput"] = True
                    if not value.startswith("regex|") and value not in quiet:
                        quiet.append(value)
                items.append(item)
                out_map[lfn] = value
            items.append({"type": "constant", "value": f'-o "{out_map}"'})
            if quiet:
                items.append({"type": "constant", "value": f"--allowNoOutput={','.join(quiet)}"})
        if inputs:
            item = {"type": "template", "param_type": "input", "value": '-i "${IN/T}"', "dataset": ",".join(inputs),
                    "exclude": r"\.log\.tgz(\.\d+)*$", "expand": True}
            if self.n_skip_files:
                item["offset"] = self.n_skip_files
            if self.match:
                item["include"] = _file_pattern(self.match)
            if self.anti_match:
                item["exclude"] += "," + _file_pattern(self.anti_match)
            files = self._input_files()
            if files:
                item["files"] = files
            items.append(item)
        items.append({"type": "constant", "value": '-p "', "padding": False})
        items += _exec_parameters(self.exec)
        items.append({"type": "constant", "value": '"'})
        db_release = self._db_release()
        if db_release is not None:
            items.append({"type": "template", "param_type": "input", "value": "--dbrFile=${DBR}",
                          "dataset": db_release[0]})
            items.append({"type": "constant", "value": "--noExpandDBR"})
        if self.secondary:
            in_map = {"IN": "tmp_IN"} if inputs else {}
            for sec in self.secondary:
                item = {"type": "template", "value": "${" + sec.stream + "}", "param_type": "input",
                        "dataset": sec.dataset, "expand": True, "hidden": True, "nFilesPerJob": sec.n_files_per_job}
                if sec.n_skip:
                    item["offset"] = sec.n_skip
                if sec.pattern:
                    item["include"] = sec.pattern
                items.append(item)
                in_map[sec.stream] = "tmp_" + sec.stream
            text = str(in_map)
            for stream in in_map:
                text = text.replace(f"'tmp_{stream}'", "${" + stream + "/T}")
            items.append({"type": "constant", "value": f'--inMap "{text}"'})
        misc = self._release_options(cmt)
        if self.write_input_to_txt:
            misc += f"--writeInputToTxt {self._write_input_to_txt()} "
        if misc:
            items.append({"type": "constant", "value": misc})
        return items

    # --- conversion -----------------------------------------------------------------------------

    def resolve(self, context: Mapping[str, Any]) -> dict[str, Any]:
        """Airflow's template rendering hook: the fields as a dict, their strings rendered with Jinja.

        Strings are always rendered as templates, never loaded as files (an output named ``x.json``
        stays a name), with the operator's environment (the DAG's macros and filters) with Jinja
        comments off, so that ``{#`` is text (bash's ``${#array[@]}``).
        """
        import jinja2

        from airflow_provider_panda.assets import add_template_filters

        task = context.get("task")
        env = task.get_template_env() if task is not None and hasattr(task, "get_template_env") \
            else jinja2.Environment()
        add_template_filters(env)  # panda_outputs, whichever operator renders the builder
        env = env.overlay(**NO_JINJA_COMMENTS)

        def render(value: Any, name: str) -> Any:
            if isinstance(value, str):
                if "{" not in value:
                    return value
                try:
                    return env.from_string(value).render(context)
                except jinja2.TemplateSyntaxError as exc:
                    raise PandaInputError(f"{name}: Jinja cannot read {value!r:.120}: {exc.message}; "
                                          f"{TEMPLATE_HINT}") from None
            if isinstance(value, (list, tuple)):
                return [render(v, name) for v in value]
            if isinstance(value, dict):
                return {k: render(v, name) for k, v in value.items()}
            return value

        fields = {k: render(v, k) if k in self.template_fields else v for k, v in self.to_dict().items()}
        for name in (*self.count_fields, *self.size_fields, "n_skip_files"):
            value = fields[name]
            if isinstance(value, str) and value.strip().isdigit():
                fields[name] = int(value)
        return fields

    def to_dict(self) -> dict[str, Any]:
        """The builder's fields as a JSON-friendly dict (what the operator stores, renders and shows)."""
        data = dataclasses.asdict(self)
        data["secondary"] = [dataclasses.asdict(s) for s in self.secondary]
        data["extra"] = dict(self.extra)
        if isinstance(self.write_input_to_txt, Mapping):
            data["write_input_to_txt"] = dict(self.write_input_to_txt)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PrunTask:
        """A builder from :meth:`to_dict`'s form (unknown keys are an error, not silently dropped)."""
        if isinstance(data, PrunTask):
            return data
        if not isinstance(data, Mapping):
            raise PandaInputError(f"task must be a PrunTask or a dict of its fields, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise PandaInputError(f"unknown task field(s) {unknown}; known: {sorted(names)}")
        values = dict(data)
        secondary = values.get("secondary") or ()
        try:
            values["secondary"] = [s if isinstance(s, SecondaryInput) else SecondaryInput(**s) for s in secondary]
            return cls(**values)
        except TypeError as exc:
            raise PandaInputError(f"bad task fields: {exc}") from None

    @classmethod
    def from_rendered(cls, data: Mapping[str, Any]) -> PrunTask:
        """A builder from fields :meth:`resolve` rendered: checked as :meth:`from_dict` does, except that
        their text is no longer read as Jinja (a rendered ``{% raw %}`` block may leave a ``{%``)."""
        token = _RENDERED.set(True)
        try:
            return cls.from_dict(data)
        finally:
            _RENDERED.reset(token)


def as_task(task: Any) -> Any:
    """A PrunTask from a builder or a dict of its fields (templated strings are checked once rendered);
    a value Airflow resolves at run time (an upstream task's XCom) is kept as it is until then."""
    if not isinstance(task, (PrunTask, Mapping)) and callable(getattr(task, "resolve", None)):
        return task
    return PrunTask.from_dict(task)


def _warn(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=5)


def _count(value: Any, what: str, other: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        # prun reads 0 or less as "not given"; here that is None, and 0 is more likely an empty upstream value
        unset = " (prun reads 0 or less as not given: leave the field out for that)" \
            if isinstance(value, int) and not isinstance(value, bool) else ""
        raise PandaInputError(f"{what} must be a positive integer{other}, got {value!r:.40}{unset}")
    return value


def _unique(items: Any) -> list[str]:
    out: list[str] = []
    for item in items:
        if item and item not in out:
            out.append(item)
    return out


def _check_in_ds(name: Any, what: str, hint: str = "") -> None:
    """Refuse what is not an input dataset name (``[scope:]name``, wildcards allowed), with the hint."""
    if not isinstance(name, str) or not name.isascii() or not _IN_DS_NAME.fullmatch(name):
        raise PandaInputError(f"{what} {name!r:.140} is not a dataset name ([scope:]name of letters, digits, "
                              "'.', '_', '-', '*')" + (f"; {hint}" if hint else ""))


def _templated(text: str) -> bool:
    """Whether a string is still a Jinja template (its names can be checked only once rendered)."""
    return "{{" in text or "{%" in text


def _in_ds_names(text: str) -> list[str]:
    """The dataset names in one string of ``in_ds``: names separated by commas, or a Python or JSON list
    literal of names (what an upstream's list XCom renders to); an unrendered template stays whole."""
    text = text.strip()
    if _templated(text):
        return [text]  # checked once rendered
    if text.startswith(("[", "(")):
        items = _list_literal(text)
    else:
        items = [text]
    return [name.strip() for item in items for name in item.split(",") if name.strip()]


def _list_literal(text: str, what: str = "in_ds") -> list[str]:
    """A list of strings written as JSON or as a Python literal (read as data, never evaluated)."""
    value: Any = None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        try:
            value = ast.literal_eval(text)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            value = None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        if what == "in_ds":
            raise PandaInputError(f"in_ds {text!r:.140} looks like a list but is not a list of dataset names; "
                                  f"{SEVERAL_IN_DS}")
        raise PandaInputError(f"{what} {text!r:.140} looks like a list but is not a list of names")
    return list(value)


def _file_pattern(pattern: str) -> str:
    """prun's --match/--antiMatch: '.' is a dot and '*' any text (the rest is a regular expression)."""
    return pattern.replace(".", r"\.").replace("*", ".*")


def _cmake_project(project: str) -> bool:
    """Whether prun reads this project's release from a CMake (asetup) environment (getAthenaVer)."""
    return project.startswith(("Athena", "Analysis")) or project in ATHENA_PROJECTS


def _athena_versions(tag: str) -> tuple[str, str, str]:
    """prun's AthenaUtils.parse_athena_tag: (athenaVer, cacheVer, nightVer) of ``--athenaTag``."""
    athena = cache = night = ""
    items = tag.split(",")
    nightlies = False
    for item in items:
        match = re.search(r"^(\d+\.\d+\.\d+)", item)
        if match:
            athena = f"Atlas-{match.group(1)}"
            full = re.search(r"^(\d+\.\d+\.\d+\.\d+\.*\d*)$", item)
            cache += f"_{full.group(1) if full is not None else match.group(1)}"
            continue
        if re.search(r"^(\d+\.\d+\.X|\d+\.X\.\d+)$", item):
            athena = f"Atlas-{item}"
            continue
        if item.startswith("master") or re.search(r"^\d+\.\d+$", item) or item == "main":
            athena = f"Atlas-{item}"
            continue
        if item.startswith("rel_"):
            nightlies = True
            if "dev" in items:
                athena = "Atlas-dev"
            elif "devval" in items:
                athena = "Atlas-devval"
            cache = f"-AtlasOffline_{item}"
            continue
        if item in ("latest", "r27") or re.search(r"^\d{4}-\d{2}-\d{2}T\d{4}$", item):
            cache += f"_{item}"
            continue
        if item in ("32", "64"):
            raise PandaInputError(f"athena_tag item {item} is not supported (prun refuses it): give the platform as "
                                  "cmt_config")
        if item == "AtlasOffline":
            continue
        cache = "-" + item + cache  # a project
    if re.search(r"^-.+_.+$", cache) is None:
        if re.search(r"^_\d+\.\d+\.\d+\.\d+$", cache) is not None:
            cache = "-AtlasProduction" + cache
        elif "AthAnalysisBase" in cache or "AthAnalysis" in cache:
            cache = f"{cache}_{athena}"
            athena = ""
        else:
            cache = ""
    if nightlies and athena == "":
        athena = "Atlas-dev"
    return athena, cache, night


def _architecture(architecture: str | None, cmt_config: str | None) -> Any:
    """prun's AthenaUtils.getCmtConfigImg: the task's architecture from --architecture and --cmtConfig, in a
    shell without $CMTCONFIG or $ALRB_USER_PLATFORM (give them as cmt_config and '@<platform>'), without
    prun 2.2.0's doubling of a platform given alone."""
    is_json = False
    spec: Any = ""
    platform = ""
    arch: Any = architecture
    if arch and "{" in arch:
        try:
            arch = json.loads(arch)
        except ValueError as exc:
            raise PandaInputError(f"architecture {architecture!r:.80} is not JSON ({exc}; prun fails on it)") from None
        if not isinstance(arch, dict):
            raise PandaInputError(f"architecture {architecture!r:.80} must be a JSON object (prun fails on others)")
        is_json = True
    if arch and not is_json:
        match = re.search("^[^@&#]+", arch)
        if match:
            platform = match.group(0)
            spec = arch.replace(platform, "")
        else:
            match = re.search("[@&#].+$", arch)
            if match:
                spec = match.group(0)
    result: Any = platform
    if not platform:
        result = cmt_config
        if is_json and result and "sw_platform" not in arch:
            arch["sw_platform"] = result
    # prun 2.2.0 appends the whole --architecture here when it has no '@', '#' or '&' part and the shell no
    # $ALRB_USER_PLATFORM ('x86_64' becomes 'x86_64x86_64', which no queue matches): the builder does not
    if spec and not is_json:
        result = (result or "") + spec
    if is_json:
        return json.dumps(arch)
    return result


def _source_url(url: str) -> str:
    parts = urlsplit(url or "")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise PandaInputError(f"source_url must be an http(s) URL, got {url!r:.80}")
    return f"{parts.scheme}://{parts.netloc}"


def _command_line(argv: Sequence[str]) -> str:
    """prun's record of its command line (PsubUtils.convSysArgv): an ``-opt=`` kept, values with spaces,
    ``*`` or ``'`` quoted."""
    text = argv[0]
    for item in argv[1:]:
        match = re.search("(^-[^=]+=)(.+)", item)
        if match is not None:
            text += f" {match.group(1)}"
            item = match.group(2)
        else:
            text += " "
        text += f'"{item}"' if re.search(r"(\*| |')", item) else item
    return text


def _exec_parameters(command: str) -> list[dict[str, Any]]:
    """prun's convertParamStrToJediParam(exec, {}, "", encode=True, padding=False, includeIO=False)."""
    command = re.sub("%RNDM:", "%RNDM=", command)
    holders = {"SEQNUMBER": "RNDM", "DBR": "DB", "SKIPEVENTS": "SKIPEVENTS", "FIRSTEVENT": None,
               "MAXEVENTS": None, "SEGMENT_NAME": None}
    with_digits = ("SEQNUMBER", "FIRSTEVENT")
    offsets: dict[str, str] = {}
    for new, old in holders.items():
        pattern = "%" + (old or new)
        if new in with_digits:
            pattern += r"(:|=)(\d+)%{0,1}"
        elif new == "DBR":
            pattern += "(:|=)([^ '\"\\}]+)"
        if new in with_digits or new == "DBR":
            match = re.search(pattern, command)
            if match is not None:
                offsets[new] = match.group(2)
        command = re.sub(pattern, "${" + new + "}", command)
    split = "(" + "|".join("[^=,\"' \\(\\{;]*\\$\\{" + h + "[^\\}]*\\}[^,\"' \\)\\};]*" for h in holders) + ")"
    items: list[dict[str, Any]] = []
    for piece in re.split(split, command):
        holder = re.search(r"\$\{([^:\}]+)", piece)
        if re.search(split, piece) is not None and holder is not None:
            name = holder.group(1)
            if name == "SEQNUMBER":
                item: dict[str, Any] = {"type": "template", "value": piece, "param_type": "pseudo_input",
                                        "dataset": "seq_number"}
            else:
                item = {"type": "template", "value": piece, "param_type": "number"}
            if name in offsets:
                try:
                    item["offset"] = int(offsets[name])
                except ValueError:
                    pass
        else:
            item = {"type": "constant", "value": quote(piece)}
        item["padding"] = False
        items.append(item)
    return items
