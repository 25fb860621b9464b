"""The prun side of the builder: ``PrunTask`` holds prun's options as typed fields and makes the task
parameter map prun (panda-client 2.2.0) makes for them (ports of PrunScript.main, CommonArgs'
splitting rules, MiscUtils.makeJediJobParam and PsubUtils.convertParamStrToJediParam)."""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
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
MAX_OUTPUTS = 10  # prun's default limit of output files per job
MAX_FILES_PER_JOB = 200  # prun --maxNFilesPerJob default
MAX_ATTEMPTS = 50
#: Placeholders prun's runGen expands in ``--exec`` (besides secondary stream names).
EXEC_PLACEHOLDERS = ("IN", "OUT", "RNDM", "SKIPEVENTS", "FIRSTEVENT", "MAXEVENTS", "SEGMENT_NAME", "CORE_NUMBER")

_DS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]*/?")  # Rucio DID names (ATLAS scopes: user.<nick>, group.<g>)
_IN_DS_NAME = re.compile(r"([A-Za-z0-9._\-]+:)?[A-Za-z0-9*][A-Za-z0-9._\-*]*/?")  # scope:name, wildcards allowed
_USER_PREFIX = re.compile(r"user\.([A-Za-z0-9_\-]+)\.[A-Za-z0-9_\-]")
_WORD = re.compile(r"[A-Za-z0-9_\-]+")
_DOTTED_WORD = re.compile(r"[A-Za-z0-9_\-]+([.:][A-Za-z0-9_\-]+)*")  # cloud, working group: words joined by . or :
_VO = re.compile(r"[a-z][a-z0-9_\-.]*")
_STREAM = re.compile(r"[A-Z][A-Z0-9_]*")
_PLACEHOLDER = re.compile(r"%([A-Z][A-Z0-9_]+)")
# prun's check_invalid_char: characters a file or dataset name may not hold
_BAD_NAME_CHARS = "%|;><?'\"()$@:=&^#\\[]{}`"
#: How to give several input datasets: said by every in_ds error.
SEVERAL_IN_DS = ("several datasets go as a list (in_ds=['scope:a', 'scope:b']), as one string of names separated by "
                 "commas ('scope:a,scope:b'), or as a template rendering either (an upstream task's list XCom renders "
                 "as a list literal, which is read as the list)")


@dataclass
class SecondaryInput:
    """A secondary input stream (prun ``--secondaryDSs StreamName:nFiles:DatasetName[:Pattern[:nSkip]]``)."""

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
        if not isinstance(self.pattern, str) or any(c in self.pattern for c in ":,#"):
            raise PandaInputError(f"pattern of stream {self.stream} must be a string without ':', ',' or '#'")

    def prun_option(self) -> str:
        text = f"{self.stream}:{self.n_files_per_job}:{self.dataset}"
        if self.pattern or self.n_skip:
            text += f":{self.pattern}"
        if self.n_skip:
            text += f":{self.n_skip}"
        return text


@dataclass(kw_only=True)
class PrunTask:
    """A user task as ``prun`` describes it; :meth:`to_params` makes PanDA's task parameter map.

    :param exec: the command (prun ``--exec``), with ``%IN``, ``%OUT``, ``%RNDM:<n>``, ``%SKIPEVENTS``,
        ``%FIRSTEVENT``, ``%MAXEVENTS``, ``%SEGMENT_NAME``, ``%CORE_NUMBER`` and secondary stream names.
    :param out_ds: the output dataset container (``user.<nickname>.<name>``; a trailing ``/`` is added);
        it is also the task's name, so make it unique per run.
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
    extra: Mapping[str, Any] = field(default_factory=dict)

    #: Counts: positive integers, or templates that render to one (e.g. ``"{{ params.n_jobs }}"``).
    count_fields: ClassVar[Sequence[str]] = (
        "n_files", "n_files_per_job", "n_jobs", "n_events", "n_events_per_job", "n_events_per_file", "memory",
        "walltime_hours", "cores", "max_attempt")
    template_fields: ClassVar[Sequence[str]] = (
        "exec", "out_ds", "in_ds", "secondary", "outputs", "site", "excluded_sites", "cloud", "container_image",
        "architecture", "working_group", "vo", "prod_source_label", "nickname", "sandbox", "extra", *count_fields)

    def __post_init__(self) -> None:
        # What can be checked before templates are rendered is checked now (DAG-parse time).
        self.check(rendered=False)

    # --- checks ---------------------------------------------------------------------------------

    def check(self, rendered: bool = True) -> None:
        """Raise PandaInputError for anything prun or PanDA would refuse; names only once rendered."""
        def ready(value: Any) -> bool:
            return rendered or not (isinstance(value, str) and ("{{" in value or "{%" in value))

        if not isinstance(self.exec, str) or not self.exec.strip():
            raise PandaInputError("exec (the command to run, prun --exec) must be a non-empty string")
        if not isinstance(self.out_ds, str) or not self.out_ds.strip():
            raise PandaInputError("out_ds (the output dataset, prun --outDS) is required")
        for name in self.count_fields:
            value = getattr(self, name)
            if value is not None and ready(value):
                _count(value, name)
        if isinstance(self.max_attempt, int) and self.max_attempt > MAX_ATTEMPTS:
            raise PandaInputError(f"max_attempt must be at most {MAX_ATTEMPTS} (prun's limit), got {self.max_attempt}")
        if isinstance(self.n_files_per_job, int) and self.n_files_per_job > MAX_FILES_PER_JOB:
            raise PandaInputError(f"n_files_per_job must be at most {MAX_FILES_PER_JOB}, got {self.n_files_per_job}")
        for name in ("fixed_memory", "build", "unique_name"):
            if not isinstance(getattr(self, name), bool):
                raise PandaInputError(f"{name} must be True or False, got {getattr(self, name)!r:.40}")
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
        if not self._inputs() and not self.secondary:
            for name in ("n_files", "n_files_per_job", "n_events_per_file"):
                if getattr(self, name) is not None:
                    raise PandaInputError(f"{name} needs an input dataset (in_ds)")
        if self.build and self.sandbox is None:
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
            self._check_exec()
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
        for site in self._sites() + list(self._excluded()):
            if ready(site) and not _WORD.fullmatch(site):
                raise PandaInputError(f"site names are letters, digits, _ or -, got {site!r:.60}")
        if self.vo is not None and ready(self.vo) and not (isinstance(self.vo, str) and _VO.fullmatch(self.vo)):
            raise PandaInputError(f"vo must be a lower-case VO name such as 'atlas', got {self.vo!r:.60}")
        if self.prod_source_label is not None and ready(self.prod_source_label) and not (
                isinstance(self.prod_source_label, str)
                                                       and re.fullmatch(r"[a-z_]+", self.prod_source_label)):
            raise PandaInputError(f"prod_source_label must be a label such as 'user' or 'test', "
                                  f"got {self.prod_source_label!r:.40}")
        if self.container_image is not None and ready(self.container_image) and not (
                isinstance(self.container_image, str) and self.container_image.strip()
                and not re.search(r"\s", self.container_image)):
            raise PandaInputError(f"container_image must be an image name without spaces, "
                                  f"got {self.container_image!r:.80}")

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
        out: list[str] = []
        for item in self.excluded_sites:
            for site in item.split(","):
                if site.strip() and site.strip() not in out:
                    out.append(site.strip())
        return out

    def _label(self) -> str:
        return self.prod_source_label or "user"

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
        if self._label() == "user":
            match = _USER_PREFIX.match(name)
            if match is None:
                raise PandaInputError(f"out_ds of a user task must start with 'user.<nickname>.', got {name!r:.140}")
            if self.nickname and match.group(1) != self.nickname:
                raise PandaInputError(f"out_ds must start with 'user.{self.nickname}.', got {name!r:.140}")
        container = name if name.endswith("/") else name + "/"
        for suffix in ("", ".log/"):
            full = container[:-1] + suffix if suffix else container
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
            if not item.startswith("regex|") and ":" in item:
                if item.count(":") != 1:
                    raise PandaInputError(f"output {item!r:.80} must be 'name' or 'suffix:name'")
                suffix, lfn = item.split(":")
                if suffix in suffixes:
                    raise PandaInputError(f"output dataset suffix {suffix!r} is used for several outputs")
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
                    raise PandaInputError(f"output file name {lfn!r:.80} may not contain '/'")
                bad = next((c for c in _BAD_NAME_CHARS if c in new), None)
                if bad is not None or not new.isascii():
                    raise PandaInputError(f"output file name {lfn!r:.80} holds {bad or 'non-ASCII'!r}, "
                                          "which file names may not contain")
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

    def _check_exec(self) -> None:
        known = set(EXEC_PLACEHOLDERS) | {s.stream for s in self.secondary}
        for name in _PLACEHOLDER.findall(self.exec):
            if name == "DB":
                raise PandaInputError("%DB (a DBRelease) is not supported by the builder: use task_params")
            if name not in known:
                raise PandaInputError(f"exec uses %{name}, which is not a prun placeholder (known: "
                                      f"{', '.join('%' + k for k in sorted(known))})")
            if name == "IN" and not self._inputs():
                raise PandaInputError("exec uses %IN but the task has no input dataset (in_ds)")

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
        if not self.build and not self.container_image:
            args += ["--noBuild"]
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
        params: dict[str, Any] = {"taskName": out_ds}
        if self.unique_name:
            params["uniqueTaskName"] = True
        params["vo"] = self.vo or "atlas"
        params["architecture"] = (self.architecture or "") if container else (self.architecture or None)
        params["transUses"] = ""
        params["transHome"] = None
        params["processingType"] = f"panda-client-{PRUN_VERSION}-jedi-run"
        params["prodSourceLabel"] = label
        sites = self._sites()
        params["site"] = sites[0] if len(sites) == 1 else None
        params["excludedSite"] = self._excluded()
        params["includedSite"] = sites if len(sites) > 1 else None
        self._split(params, no_input=not inputs)
        params["cliParams"] = _command_line(["prun", *self.prun_args()])
        import platform

        params["osInfo"] = platform.platform()  # the submitting host's, as prun records it
        if self.working_group:
            params["workingGroup"] = self.working_group.split(".")[0].split(":")[0]
        params["nMaxFilesPerJob"] = MAX_FILES_PER_JOB
        if self.walltime_hours:
            params["maxWalltime"] = self.walltime_hours
        if self.memory:
            params["ramCount"] = self.memory
            params["ramCountUnit"] = "MBPerCoreFixed" if self.fixed_memory else "MBPerCore"
        if self.cores and self.cores > 1:
            params["coreCount"] = self.cores
        params["respectSplitRule"] = True
        if self.max_attempt:
            params["maxAttempt"] = self.max_attempt
        params["sourceURL"] = _source_url(source_url)
        if container:
            params["container_name"] = self.container_image
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
        params["jobParameters"] = self._job_parameters(out_ds, inputs, sandbox_name)
        if inputs:
            params["dsForIN"] = ",".join(inputs)
        else:
            params["noInput"] = True
        if self.secondary:
            params["reuseSecOnDemand"] = True
        if self.build:
            params["buildSpec"] = {"prodSourceLabel": self.prod_source_label or "panda", "archiveName": sandbox_name,
                                   "jobParameters": "-i ${IN} -o ${OUT} --sourceURL ${SURL} -r . "}
        if self.cloud:
            params["cloud"] = self.cloud
        params.update(self.extra)
        return params

    def _split(self, params: dict[str, Any], no_input: bool) -> None:
        """prun's set_n_files_from_n_jobs and set_events_task_params."""
        n_jobs = self.n_jobs or -1
        n_events = self.n_events or -1
        per_job = self.n_events_per_job or -1
        per_file = self.n_events_per_file or 0
        n_files = self.n_files or 0
        files_per_job = self.n_files_per_job or -1
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

    def _job_parameters(self, out_ds: str, inputs: list[str], sandbox_name: str | None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = [
            {"type": "constant", "value": '-j "" --sourceURL ${SURL}'},
            {"type": "constant", "value": "-r ."},
            {"type": "constant", "value": "__delimiter__", "hidden": True},
        ]
        if self.build:
            items.append({"type": "constant", "value": "-l ${LIB}"})
        elif sandbox_name:
            items.append({"type": "constant", "value": f"-a {sandbox_name}"})
        outputs = self._outputs()
        if outputs:
            out_map = {}
            for lfn, value, dataset in outputs:
                items.append({"type": "template", "value": value, "param_type": "output", "dataset": dataset,
                              "container": dataset, "hidden": True})
                out_map[lfn] = value
            items.append({"type": "constant", "value": f'-o "{out_map}"'})
        if inputs:
            items.append({"type": "template", "param_type": "input", "value": '-i "${IN/T}"',
                          "dataset": ",".join(inputs), "exclude": r"\.log\.tgz(\.\d+)*$", "expand": True})
        items.append({"type": "constant", "value": '-p "', "padding": False})
        items += _exec_parameters(self.exec)
        items.append({"type": "constant", "value": '"'})
        if self.secondary:
            in_map = {"IN": "tmp_IN"} if inputs else {}
            for sec in self.secondary:
                item: dict[str, Any] = {"type": "template", "value": "${" + sec.stream + "}", "param_type": "input",
                                        "dataset": sec.dataset, "expand": True, "hidden": True,
                                        "nFilesPerJob": sec.n_files_per_job}
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
        return items

    # --- conversion -----------------------------------------------------------------------------

    def resolve(self, context: Mapping[str, Any]) -> dict[str, Any]:
        """Airflow's template rendering hook: the fields as a dict, their strings rendered with Jinja.

        Strings are always rendered as templates, never loaded as files (an output named ``x.json``
        stays a name), with the operator's environment (the DAG's macros and filters).
        """
        from airflow_provider_panda.assets import add_template_filters

        task = context.get("task")
        if task is not None and hasattr(task, "get_template_env"):
            env = task.get_template_env()
        else:
            import jinja2

            env = jinja2.Environment()
        add_template_filters(env)  # panda_outputs, whichever operator renders the builder

        def render(value: Any) -> Any:
            if isinstance(value, str):
                return env.from_string(value).render(context) if "{" in value else value
            if isinstance(value, (list, tuple)):
                return [render(v) for v in value]
            if isinstance(value, dict):
                return {k: render(v) for k, v in value.items()}
            return value

        fields = {k: render(v) if k in self.template_fields else v for k, v in self.to_dict().items()}
        for name in self.count_fields:
            value = fields[name]
            if isinstance(value, str) and value.strip().isdigit():
                fields[name] = int(value)
        return fields


    def to_dict(self) -> dict[str, Any]:
        """The builder's fields as a JSON-friendly dict (what the operator stores, renders and shows)."""
        data = dataclasses.asdict(self)
        data["secondary"] = [dataclasses.asdict(s) for s in self.secondary]
        data["extra"] = dict(self.extra)
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


def as_task(task: Any) -> Any:
    """A PrunTask from a builder or a dict of its fields (templated strings are checked once rendered);
    a value Airflow resolves at run time (an upstream task's XCom) is kept as it is until then."""
    if not isinstance(task, (PrunTask, Mapping)) and callable(getattr(task, "resolve", None)):
        return task
    return PrunTask.from_dict(task)


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PandaInputError(f"{what} must be a positive integer, got {value!r:.40}")
    return value


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


def _list_literal(text: str) -> list[str]:
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
        raise PandaInputError(f"in_ds {text!r:.140} looks like a list but is not a list of dataset names; "
                              f"{SEVERAL_IN_DS}")
    return list(value)


def _source_url(url: str) -> str:
    parts = urlsplit(url or "")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise PandaInputError(f"source_url must be an http(s) URL, got {url!r:.80}")
    return f"{parts.scheme}://{parts.netloc}"


def _command_line(argv: Sequence[str]) -> str:
    """prun's record of its command line (PsubUtils.convSysArgv): items with spaces, * or ' quoted."""
    text = argv[0]
    for item in argv[1:]:
        text += " " + (f'"{item}"' if re.search(r"(\*| |')", item) else item)
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
