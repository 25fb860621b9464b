"""The PrunTask builder's own rules: refusals (each with its message), defaults, the splitting rules,
the dict form. The map's equality with prun's is tests/test_task_builder.py's witness, and its
catalogue of bad names and counts is not repeated here."""

from __future__ import annotations

import re
import warnings
from typing import Any

import pytest

from airflow_provider_panda.builder import prun
from airflow_provider_panda.builder.prun import PrunTask, SecondaryInput
from airflow_provider_panda.exceptions import PandaInputError

GOOD: dict[str, Any] = {"exec": "echo hi", "out_ds": "user.alice.unit"}
SOURCE = "https://pandacache.example:25443"


def task(**fields: Any) -> PrunTask:
    return PrunTask(**{**GOOD, **fields})


def params(**fields: Any) -> dict[str, Any]:
    return task(**fields).to_params(source_url=SOURCE)


def refused(words: str, **fields: Any) -> None:
    with pytest.raises(PandaInputError) as info:
        task(**fields)
    assert words in str(info.value), str(info.value)


# --- refusals -----------------------------------------------------------------------------------

REFUSALS = [
    ("fixed_memory not a bool", dict(fixed_memory="yes"), "fixed_memory must be True or False"),
    ("build not a bool", dict(build=1), "build must be True or False"),
    ("unique_name not a bool", dict(unique_name=None), "unique_name must be True or False"),
    ("extra not a dict", dict(extra=[("a", 1)]), "extra must be a dict of raw task parameters"),
    ("extra with a non-string key", dict(extra={1: "a"}), "extra must be a dict of raw task parameters"),
    ("extra sets jobParameters", dict(extra={"jobParameters": []}), "extra may not set ['jobParameters']"),
    ("extra sets log", dict(extra={"log": {}, "taskPriority": 900}), "extra may not set ['log']"),
    ("outputs as one string", dict(outputs="out.root"), "outputs must be a list of file names"),
    ("outputs holding a number", dict(outputs=["a", 1]), "outputs must be a list of file names"),
    ("secondary as dicts", dict(secondary=[{"stream": "BKG"}]), "secondary must be a list of SecondaryInput"),
    ("sandbox not a path", dict(sandbox=5), "sandbox must be a directory path"),
    ("sandbox empty", dict(sandbox=""), "sandbox must be a directory path"),
    ("in_ds rendered from an empty XCom", dict(in_ds="None"), "in_ds is 'None'"),
    ("in_ds an empty list literal", dict(in_ds="[]"), "names no dataset"),
    ("in_ds only commas", dict(in_ds=" , "), "names no dataset"),
    ("in_ds a list literal of numbers", dict(in_ds="[1, 2]"), "looks like a list but is not a list of dataset"),
    ("in_ds a broken list literal", dict(in_ds="['a', "), "looks like a list"),
    ("in_ds a list holding a number", dict(in_ds=["d.a", 3]), "in_ds must be dataset names"),
    ("in_ds a number", dict(in_ds=5), "in_ds must be dataset names"),
    ("in_ds with a bad name in a list", dict(in_ds=["d.a", "bad name"]), "several datasets go as a list"),
    ("two secondaries with one stream name",
     dict(in_ds="d.a", secondary=[SecondaryInput("BKG", "d.b", 1), SecondaryInput("BKG", "d.c", 1)]),
     "secondary stream names must be unique"),
    ("secondary stream IN", dict(in_ds="d.a", secondary=[SecondaryInput("IN", "d.b", 1)]), "(not IN)"),
    ("secondary bad dataset", dict(secondary=[SecondaryInput("BKG", "bad name", 1)]),
     "secondary dataset of stream BKG"),
    ("secondary zero files per job", dict(secondary=[SecondaryInput("BKG", "d.b", 0)]),
     "n_files_per_job of stream BKG must be a positive integer"),
    ("secondary negative skip", dict(secondary=[SecondaryInput("BKG", "d.b", 1, n_skip=-1)]),
     "n_skip of stream BKG must be an integer >= 0"),
    ("secondary pattern with a comma", dict(secondary=[SecondaryInput("BKG", "d.b", 1, pattern="a,b")]),
     "pattern of stream BKG must be a string without ',' or '#'"),
    ("secondary pattern with a hash", dict(secondary=[SecondaryInput("BKG", "d.b", 1, pattern="a#b")]),
     "pattern of stream BKG must be a string without ',' or '#'"),
    ("bad cloud", dict(cloud="U S"), "cloud must be a name of letters"),
    ("bad working group", dict(working_group="phys higgs"), "working_group must be a name of letters"),
    ("site not a name", dict(site=5), "site must be a queue name or a list of them"),
    ("excluded sites as a string", dict(excluded_sites="A,B"), "excluded_sites must be a list of queue names"),
    ("bad excluded site", dict(excluded_sites=["A B"]), "site names are letters"),
    ("empty container image", dict(container_image=""), "container_image must be an image name"),
    ("output with two colons", dict(outputs=["a:b:c.root"]), "must be 'name' or 'suffix:name'"),
    ("output with a suffix and no name", dict(outputs=["hist:"]), "has no file name"),
    ("two outputs to one dataset", dict(outputs=["out.root", "out.root"]), "two outputs would go to the same dataset"),
    ("non-ASCII output", dict(outputs=["résumé.txt"]), "non-ASCII"),
    ("non-ASCII out_ds", dict(out_ds="user.alice.résumé"), "must be letters, digits"),
    ("log container too long", dict(out_ds="user.alice." + "x" * 118), "out_ds and out_ds.log/ must fit"),
    ("label with capitals", dict(prod_source_label="User"), "prod_source_label"),
    ("a flag not a bool", dict(no_email="yes"), "no_email must be True or False"),
    ("merge_output not a bool", dict(merge_output=1), "merge_output must be True or False"),
    ("match not a string", dict(in_ds="d.a", match=5), "match must be a string"),
    ("files to skip negative", dict(in_ds="d.a", n_skip_files=-1), "n_skip_files must be an integer >= 0"),
    ("most files per job zero", dict(in_ds="d.a", max_files_per_job=0), "max_files_per_job must be a positive"),
    ("size per job a float", dict(in_ds="d.a", n_gb_per_job=2.5), "n_gb_per_job must be a positive integer or 'MAX'"),
    ("input list of no stream", dict(write_input_to_txt="IN:a.txt,b.txt"), "'b.txt' must be StreamName:FileName"),
    ("input list with a space", dict(write_input_to_txt="IN: a.txt"), "must be StreamName:FileName"),
    ("input list a number", dict(write_input_to_txt=5), "write_input_to_txt must be"),
    ("input list mapping to a number", dict(write_input_to_txt={"IN": 5}), "must map stream names to file names"),
    ("allow_no_output a number", dict(allow_no_output=[1]), "allow_no_output must be a list of patterns"),
    ("file list a number", dict(in_ds="d.a", input_file_list=5), "input_file_list must be a local file"),
    ("file list literal of numbers", dict(in_ds="d.a", input_file_list="[1, 2]"), "looks like a list but"),
    ("platform with a space", dict(cmt_config="x86_64 el9"), "cmt_config must be a platform name"),
    ("architecture not a string", dict(architecture=64), "architecture must be a string"),
    ("architecture a JSON list", dict(architecture='[{"gpu_spec": {}}]'), "must be a JSON object"),
    ("athena packages of a cache", dict(use_athena_packages=True, athena_tag="AtlasProduction,20.7.9.9",
                                        cmt_config="x86_64-slc6-gcc49-opt", sandbox="."), "of a CMake release"),
    ("athena packages without a platform", dict(use_athena_packages=True, athena_tag="AnalysisBase,24.2.35",
                                                sandbox="."), "needs cmt_config"),
    ("a Jinja statement in a templated field", dict(out_ds="user.alice.{% if %}"), "Jinja cannot read"),
]


@pytest.mark.parametrize("fields, words", [c[1:] for c in REFUSALS], ids=[c[0] for c in REFUSALS])
def test_the_builder_refuses_with_a_message_naming_the_rule(fields, words):
    refused(words, **fields)


def test_the_refusal_catalogue_does_not_shrink_silently():
    assert len(REFUSALS) >= 40


def test_an_exec_that_is_not_a_string_is_refused():
    with pytest.raises(PandaInputError, match="exec .* must be a non-empty string"):
        PrunTask(exec=None, out_ds="user.alice.x")


def test_a_secondary_stream_name_is_a_known_placeholder():
    task(in_ds="d.a", exec="run %IN %BKG", secondary=[SecondaryInput("BKG", "d.b", 1)])


def test_a_nickname_is_only_checked_when_given():
    task(out_ds="user.bob.x")
    refused("must start with 'user.alice.'", out_ds="user.bob.x", nickname="alice")


def test_a_non_user_label_needs_no_user_prefix():
    assert params(prod_source_label="test", out_ds="group.phys.x")["taskName"] == "group.phys.x/"


def test_a_to_params_needs_the_uploaded_sandbox_name_when_there_is_a_sandbox():
    with pytest.raises(PandaInputError, match="upload it first"):
        task(sandbox="/tmp/work").to_params(source_url=SOURCE)


@pytest.mark.parametrize("name", ["../x.tar.gz", "a b.tar.gz", "dir/x.tar.gz", ""])
def test_a_sandbox_name_must_be_a_plain_file_name(name):
    with pytest.raises(PandaInputError, match="sandbox_name must be a plain file name"):
        task().to_params(source_url=SOURCE, sandbox_name=name)


@pytest.mark.parametrize("url", ["pandacache.example", "ftp://host", "https://"])
def test_the_source_url_must_be_http(url):
    with pytest.raises(PandaInputError, match="source_url must be an http"):
        task().to_params(source_url=url)


# --- templates are checked once rendered --------------------------------------------------------


@pytest.mark.parametrize("fields", [
    dict(in_ds="{{ ti.xcom_pull('up') }}", exec="cat %IN"),
    dict(site="{{ params.site }}"),
    dict(vo="{{ params.vo }}"),
    dict(container_image="{{ params.image }}"),
    dict(outputs=["{{ params.out }}"]),
    dict(secondary=[SecondaryInput("BKG", "{{ params.bkg }}", 1)]),
    dict(athena_tag="{{ params.release }}", cmt_config="{{ params.platform }}"),
    dict(n_gb_per_job="{{ params.gb }}", in_ds="d.a"),
    dict(write_input_to_txt="{{ params.lists }}"),
])
def test_a_templated_field_passes_at_parse_time(fields):
    task(**fields)


def test_a_templated_field_is_checked_when_rendered():
    builder = task(vo="{{ params.vo }}")
    with pytest.raises(PandaInputError, match="vo must be a lower-case VO name"):
        builder.check(rendered=True)


def test_a_rendered_list_literal_of_datasets_is_read_as_the_list():
    fields = task(in_ds="{{ ti.xcom_pull('up') }}", exec="cat %IN").resolve(
        {"ti": type("TI", (), {"xcom_pull": lambda self, t: ["scope:a", "scope:b"]})()})
    assert PrunTask.from_dict(fields).to_params(source_url=SOURCE)["dsForIN"] == "scope:a,scope:b"


def test_rendering_turns_digit_strings_of_counts_into_integers():
    fields = task(n_jobs="{{ params.n }}").resolve({"params": {"n": 7}})
    assert fields["n_jobs"] == 7


def test_rendering_leaves_a_name_with_braces_but_no_template_as_it_is():
    assert task(extra={"x": "a.json"}).resolve({})["extra"] == {"x": "a.json"}


# --- input names --------------------------------------------------------------------------------


@pytest.mark.parametrize("in_ds, names", [
    ("d.a", "d.a"),
    ("d.a, d.b,", "d.a,d.b"),
    (["d.a", "d.b,d.c"], "d.a,d.b,d.c"),
    ('["scope:a", "scope:b"]', "scope:a,scope:b"),
    ("['scope:a']", "scope:a"),
    ("('a.x', 'b.y')", "a.x,b.y"),
    ("mc16*.AOD/", "mc16*.AOD/"),
])
def test_input_datasets_are_read_as_prun_reads_in_ds(in_ds, names):
    assert params(in_ds=in_ds)["dsForIN"] == names


# --- defaults -----------------------------------------------------------------------------------


def test_the_defaults_of_a_task_without_input():
    made = params()
    assert made["taskName"] == "user.alice.unit/"
    assert made["uniqueTaskName"] is True
    assert (made["vo"], made["prodSourceLabel"]) == ("atlas", "user")
    assert made["noInput"] is True and "dsForIN" not in made
    assert (made["nEvents"], made["nEventsPerJob"]) == (1, 1)
    assert made["nMaxFilesPerJob"] == prun.MAX_FILES_PER_JOB
    assert made["processingType"] == f"panda-client-{prun.PRUN_VERSION}-jedi-run"
    assert made["sourceURL"] == SOURCE
    assert made["respectSplitRule"] is True
    assert made["architecture"] is None
    assert (made["site"], made["includedSite"], made["excludedSite"]) == (None, None, [])
    assert (made["transUses"], made["transHome"]) == ("", None)
    for absent in ("ramCount", "coreCount", "maxAttempt", "maxWalltime", "workingGroup", "cloud", "buildSpec",
                   "container_name", "multiStepExec", "reuseSecOnDemand", "nGBPerJob", "mergeSpec", "mergeOutput",
                   "log_merge", "nGBPerMergeJob", "useLocalIO", "official", "noEmail", "fixedSandbox", "avoidVP",
                   "osMatching", "disableAutoRetry", "skipEmptyInput", "useRealNumEvents"):
        assert absent not in made, absent


def test_the_default_source_url_is_the_cache_server():
    assert task().to_params()["sourceURL"] == prun.DEFAULT_SOURCE_URL


def test_the_source_url_keeps_only_scheme_and_host():
    assert task().to_params(source_url="https://host:1234/server/panda")["sourceURL"] == "https://host:1234"


def test_duplicate_names_are_allowed_only_when_asked():
    made = params(unique_name=False)
    assert "uniqueTaskName" not in made
    assert "--allowTaskDuplication" in made["cliParams"]


def test_the_log_goes_to_the_log_container_of_out_ds():
    assert params()["log"] == {"dataset": "user.alice.unit.log/", "container": "user.alice.unit.log/",
                               "type": "template", "param_type": "log",
                               "value": "user.alice.unit.log.$JEDITASKID.${SN}.log.tgz"}


def test_a_trailing_slash_of_out_ds_is_kept_once():
    assert params(out_ds="user.alice.unit/")["taskName"] == "user.alice.unit/"


def test_one_site_is_the_site_and_several_are_included_sites():
    assert params(site="A")["site"] == "A"
    several = params(site=["A", "B,C"])
    assert (several["site"], several["includedSite"]) == (None, ["A", "B", "C"])


def test_excluded_sites_are_split_and_deduplicated_in_order():
    assert params(excluded_sites=["B,A", "B", " C "])["excludedSite"] == ["B", "A", "C"]


@pytest.mark.parametrize("fixed, unit", [(False, "MBPerCore"), (True, "MBPerCoreFixed")])
def test_memory_goes_per_core_fixed_only_when_asked(fixed, unit):
    made = params(memory=2000, fixed_memory=fixed)
    assert (made["ramCount"], made["ramCountUnit"]) == (2000, unit)


def test_one_core_is_not_written_and_several_are():
    assert "coreCount" not in params(cores=1)
    assert params(cores=4)["coreCount"] == 4


def test_walltime_attempts_cloud_and_working_group_are_written_when_given():
    made = params(walltime_hours=3, max_attempt=7, cloud="US", working_group="phys-higgs.x:y")
    assert (made["maxWalltime"], made["maxAttempt"], made["cloud"], made["workingGroup"]) == (3, 7, "US", "phys-higgs")


def test_a_container_image_runs_the_exec_script_in_it():
    made = params(container_image="docker://busybox", architecture="x86_64")
    assert made["container_name"] == "docker://busybox"
    assert made["multiStepExec"]["containerOptions"]["containerImage"] == "docker://busybox"
    assert made["architecture"] == "x86_64"
    assert params(container_image="docker://busybox")["architecture"] == ""
    assert "--noBuild" not in made["cliParams"]


def test_a_build_step_builds_the_uploaded_sandbox():
    made = task(build=True, sandbox="/tmp/work").to_params(source_url=SOURCE, sandbox_name="sources.x.tar.gz")
    assert made["buildSpec"]["archiveName"] == "sources.x.tar.gz"
    assert made["buildSpec"]["prodSourceLabel"] == "panda"
    assert {"type": "constant", "value": "-l ${LIB}"} in made["jobParameters"]


def test_a_sandbox_without_a_build_step_is_unpacked_by_the_job():
    made = task(sandbox="/tmp/work").to_params(source_url=SOURCE, sandbox_name="jobO.x.tar.gz")
    assert {"type": "constant", "value": "-a jobO.x.tar.gz"} in made["jobParameters"]
    assert "buildSpec" not in made


def test_extra_parameters_are_merged_last():
    made = params(extra={"taskPriority": 900, "vo": "wlcg"})
    assert (made["taskPriority"], made["vo"]) == (900, "wlcg")


def test_a_secondary_stream_reuses_its_files_on_demand_and_maps_to_its_placeholder():
    made = params(in_ds="d.a", exec="run %IN %BKG",
                  secondary=[SecondaryInput("BKG", "d.b", 2, pattern="AOD", n_skip=3)])
    assert made["reuseSecOnDemand"] is True
    item = next(i for i in made["jobParameters"] if i.get("value") == "${BKG}")
    assert (item["dataset"], item["nFilesPerJob"], item["include"], item["offset"]) == ("d.b", 2, "AOD", 3)
    assert {"type": "constant", "value": "--inMap \"{'IN': ${IN/T}, 'BKG': ${BKG/T}}\""} in made["jobParameters"]


@pytest.mark.parametrize("secondary, option", [
    (SecondaryInput("BKG", "d.b", 2), "BKG:2:d.b"),
    (SecondaryInput("BKG", "d.b", 2, pattern="AOD"), "BKG:2:d.b:AOD"),
    (SecondaryInput("BKG", "d.b", 2, n_skip=4), "BKG:2:d.b::4"),
    (SecondaryInput("BKG", "d.b", 2, pattern="AOD", n_skip=4), "BKG:2:d.b:AOD:4"),
])
def test_a_secondary_stream_as_a_prun_option(secondary, option):
    assert secondary.prun_option() == option


# --- outputs ------------------------------------------------------------------------------------


def outputs_of(made: dict[str, Any]) -> list[tuple[str, str]]:
    return [(i["value"], i["dataset"]) for i in made["jobParameters"] if i.get("param_type") == "output"]


def test_an_output_file_goes_to_its_own_container():
    assert outputs_of(params(outputs=["out.root"])) == [
        ("user.alice.$JEDITASKID._${SN/P}.out.root", "user.alice.unit_out.root/")]


def test_an_output_with_a_suffix_names_its_container_by_the_suffix():
    assert outputs_of(params(outputs=["hist:h.root"]))[0][1] == "user.alice.unit_hist/"


def test_a_wildcard_output_is_shipped_as_a_tarball():
    assert outputs_of(params(outputs=["h*.root"]))[0] == ("user.alice.$JEDITASKID._${SN/P}.hXYZ.root.tgz",
                                                          "user.alice.unit_hXYZ.root.tgz/")


def test_regex_outputs_are_numbered_containers():
    assert [d for _, d in outputs_of(params(outputs=["regex|a.*", "regex|b.*"]))] == [
        "user.alice.unit_0/", "user.alice.unit_1/"]


def test_the_output_map_is_given_to_the_job():
    made = params(outputs=["out.root", "hist:h.root"])
    assert {"type": "constant", "value": "-o \"{'out.root': 'user.alice.$JEDITASKID._${SN/P}.out.root', "
                                         "'h.root': 'user.alice.$JEDITASKID._${SN/P}.h.root'}\""} \
        in made["jobParameters"]


def test_spaces_in_an_output_name_are_dropped():
    assert outputs_of(params(outputs=["out .root"]))[0][1] == "user.alice.unit_out.root/"


# --- splitting (prun's set_n_files_from_n_jobs and set_events_task_params) ------------------------


def split(**fields: Any) -> dict[str, Any]:
    made = params(**fields)
    keys = ("nFiles", "nFilesPerJob", "nEvents", "nEventsPerJob", "nEventsPerFile", "useRealNumEvents")
    return {k: made[k] for k in keys if k in made}


@pytest.mark.parametrize("fields, expected", [
    (dict(n_jobs=4), {"nEvents": 4, "nEventsPerJob": 1}),
    (dict(n_events=100), {"nEvents": 100}),
    (dict(n_events=100, n_jobs=3), {"nEvents": 100, "nEventsPerJob": 33}),
    (dict(n_events=2, n_jobs=5), {"nEvents": 2, "nEventsPerJob": 1}),
    (dict(n_events_per_job=10), {"nEvents": 10, "nEventsPerJob": 10}),
    (dict(n_events_per_job=10, n_jobs=3), {"nEvents": 30, "nEventsPerJob": 10}),
    (dict(n_events=50, n_events_per_job=10), {"nEvents": 50, "nEventsPerJob": 10}),
])
def test_a_task_without_input_is_split_by_events(fields, expected):
    assert split(**fields) == expected


@pytest.mark.parametrize("fields, expected", [
    (dict(), {}),
    (dict(n_files_per_job=3, n_jobs=4), {"nFiles": 12, "nFilesPerJob": 3}),
    (dict(n_files=10, n_jobs=4), {"nFiles": 10, "nFilesPerJob": 2}),
    (dict(n_files=3, n_jobs=4), {"nFiles": 3, "nFilesPerJob": 1}),
    (dict(n_events_per_job=100, n_events_per_file=50, n_jobs=3),
     {"nFiles": 6, "nFilesPerJob": 2, "nEventsPerJob": 100, "nEventsPerFile": 50, "nEvents": 300}),
    (dict(n_events_per_job=100), {"nEventsPerJob": 100, "useRealNumEvents": True}),
    (dict(n_events=500, n_events_per_job=100), {"nEvents": 500, "nEventsPerJob": 100, "useRealNumEvents": True}),
])
def test_a_task_with_input_is_split_by_files(fields, expected):
    assert split(in_ds="d.a", **fields) == expected


# --- exec placeholders --------------------------------------------------------------------------


def exec_items(command: str) -> list[dict[str, Any]]:
    return prun._exec_parameters(command)


def test_a_random_seed_is_a_sequence_number_with_its_offset():
    items = exec_items("gen --seed %RNDM:100")
    seed = next(i for i in items if i["type"] == "template")
    assert seed == {"type": "template", "value": "${SEQNUMBER}", "param_type": "pseudo_input",
                    "dataset": "seq_number", "offset": 100, "padding": False}


def test_event_placeholders_are_number_templates():
    items = [i for i in exec_items("run --skip %SKIPEVENTS --n %MAXEVENTS") if i["type"] == "template"]
    assert [(i["value"], i["param_type"]) for i in items] == [("${SKIPEVENTS}", "number"),
                                                              ("${MAXEVENTS}", "number")]


def test_the_rest_of_the_command_is_url_quoted_constants():
    assert exec_items('echo "a b"') == [{"type": "constant", "value": "echo%20%22a%20b%22", "padding": False}]


def test_the_command_line_quotes_items_with_spaces_stars_or_quotes():
    assert prun._command_line(["prun", "--exec", "echo hi", "--inDS", "a*", "--x", "it's", "--y", "z"]) == \
        "prun --exec \"echo hi\" --inDS \"a*\" --x \"it's\" --y z"


# --- the dict form ------------------------------------------------------------------------------


def full_task() -> PrunTask:
    return task(in_ds=["d.a", "d.b"], exec="run %IN %BKG", outputs=["out.root"], n_files_per_job=2, n_jobs=3,
                secondary=[SecondaryInput("BKG", "d.c", 1, pattern="AOD", n_skip=2)], site=["A", "B"],
                excluded_sites=["C"], memory=2000, fixed_memory=True, walltime_hours=2, cores=4,
                container_image="docker://x", max_attempt=3, working_group="phys", vo="atlas",
                prod_source_label="user", nickname="alice", unique_name=False, extra={"taskPriority": 900},
                athena_tag="AnalysisBase,24.2.35", cmt_config="x86_64-el9-gcc13-opt",
                write_input_to_txt={"IN": "in.txt"}, max_files_per_job=300, match="*.root", anti_match="*.tmp",
                n_skip_files=1, input_file_list=["a.root"], force_staged=True, skip_empty_input=True,
                avoid_vp=True, merge_output=True, merge_script="hadd -f %OUT %IN", merge_log=True,
                merge_single_file=True, n_gb_per_merge_job=5, allow_no_output=["out.root"], dest_se="SE",
                no_email=True, disable_auto_retry=True, os_matching=True, use_new_code=True)


def test_a_builder_survives_its_dict_form():
    builder = full_task()
    again = PrunTask.from_dict(builder.to_dict())
    assert again == builder
    assert again.to_params(source_url=SOURCE) == builder.to_params(source_url=SOURCE)


def test_a_default_builder_survives_its_dict_form():
    assert PrunTask.from_dict(task().to_dict()).to_dict() == task().to_dict()


def test_the_dict_form_is_plain_data():
    import json

    data = full_task().to_dict()
    assert json.loads(json.dumps(data)) == {**data, "in_ds": ["d.a", "d.b"]}
    assert data["secondary"] == [{"stream": "BKG", "dataset": "d.c", "n_files_per_job": 1, "pattern": "AOD",
                                  "n_skip": 2}]


def test_from_dict_hands_a_builder_back_as_it_is():
    builder = task()
    assert PrunTask.from_dict(builder) is builder


def test_from_dict_refuses_what_is_not_a_dict():
    with pytest.raises(PandaInputError, match="task must be a PrunTask or a dict of its fields, got list"):
        PrunTask.from_dict([("exec", "x")])


def test_from_dict_refuses_a_secondary_stream_with_missing_fields():
    with pytest.raises(PandaInputError, match="bad task fields"):
        PrunTask.from_dict({**GOOD, "secondary": [{"stream": "BKG"}]})


def test_from_dict_checks_the_fields_as_the_constructor_does():
    with pytest.raises(PandaInputError, match="n_jobs must be a positive integer"):
        PrunTask.from_dict({**GOOD, "n_jobs": 0})


def test_as_task_keeps_a_value_airflow_resolves_at_run_time():
    class Later:
        def resolve(self, context):
            return GOOD

    later = Later()
    assert prun.as_task(later) is later
    assert prun.as_task(dict(GOOD)).to_dict() == task().to_dict()


def test_a_cloud_with_characters_after_a_dot_is_refused_or_cut():
    try:
        made = params(cloud="US.;$ x")
    except PandaInputError:
        return
    assert made["cloud"] == "US"


# --- the release: prun's parse_athena_tag and getCmtConfigImg -----------------------------------

@pytest.mark.parametrize("tag, versions", [  # what panda-client 2.2.0's AthenaUtils.parse_athena_tag returns
    ("AnalysisBase,24.2.35", ("Atlas-24.2.35", "-AnalysisBase_24.2.35", "")),
    ("24.2.35,AnalysisBase", ("Atlas-24.2.35", "-AnalysisBase_24.2.35", "")),
    ("AthAnalysis,21.2.170", ("Atlas-21.2.170", "-AthAnalysis_21.2.170", "")),
    ("21.2.247", ("Atlas-21.2.247", "", "")),
    ("AtlasProduction,20.7.9.9", ("Atlas-20.7.9", "-AtlasProduction_20.7.9.9", "")),
    ("AthAnalysis,master", ("", "-AthAnalysis_Atlas-master", "")),
    ("main,Athena", ("Atlas-main", "", "")),
    ("master,Athena,latest", ("Atlas-master", "-Athena_latest", "")),
    ("Athena,24.0,latest", ("Atlas-24.0", "-Athena_latest", "")),
    ("AnalysisBase,25.2.X", ("Atlas-25.2.X", "", "")),
    ("AtlasOffline,21.0.1", ("Atlas-21.0.1", "", "")),
])
def test_an_athena_tag_is_read_as_prun_reads_it(tag, versions):
    assert prun._athena_versions(tag) == versions


def test_an_athena_tag_sets_the_release_and_the_platform():
    made = params(athena_tag="AnalysisBase,24.2.35", cmt_config="x86_64-el9-gcc13-opt")
    assert (made["transUses"], made["transHome"]) == ("Atlas-24.2.35", "AnalysisTransforms-AnalysisBase_24.2.35")
    assert made["architecture"] == "x86_64-el9-gcc13-opt"
    assert {"type": "constant", "value": "--cmtConfig x86_64-el9-gcc13-opt "} in made["jobParameters"]


def test_a_release_without_a_project_has_no_transformation_home_of_a_cache():
    made = params(athena_tag="21.2.247", cmt_config="x86_64-centos7-gcc8-opt")
    assert (made["transUses"], made["transHome"]) == ("Atlas-21.2.247", "AnalysisTransforms")


@pytest.mark.parametrize("architecture, cmt, made", [
    (None, None, None),
    ("", None, None),
    (None, "x86_64-el9-gcc13-opt", "x86_64-el9-gcc13-opt"),
    ("@el9", None, "@el9"),
    ("@el9", "x86_64-el9-gcc13-opt", "x86_64-el9-gcc13-opt@el9"),
    ("#x86_64-*-avx2&nvidia", None, "#x86_64-*-avx2&nvidia"),
    ("x86_64-el9-gcc13-opt@el9", "other-platform", "x86_64-el9-gcc13-opt@el9"),
    ("x86_64-el9-gcc13-opt", None, "x86_64-el9-gcc13-opt"),  # prun 2.2.0 doubles it; the builder does not
    ('{"gpu_spec":{"model":"A100"}}', None, '{"gpu_spec": {"model": "A100"}}'),
    ('{"gpu_spec":{"model":"A100"}}', "p", '{"gpu_spec": {"model": "A100"}, "sw_platform": "p"}'),
])
def test_the_architecture_is_made_as_prun_makes_it(architecture, cmt, made):
    assert prun._architecture(architecture, cmt) == made


def test_athena_packages_are_set_up_from_the_release_of_the_sandbox():
    made = task(use_athena_packages=True, athena_tag="AnalysisBase,24.2.35", cmt_config="x86_64-el9-gcc13-opt",
                sandbox="/work").to_params(source_url=SOURCE, sandbox_name="jobO.x.tar.gz")
    assert {"type": "constant", "value": "-r ./"} in made["jobParameters"]
    assert made["jobParameters"][-1]["value"] == "--useAthenaPackages --useCMake --cmtConfig x86_64-el9-gcc13-opt "


def test_athena_packages_in_a_container_run_the_exec_through_rungen():
    made = task(use_athena_packages=True, athena_tag="Athena,24.0.10", cmt_config="x86_64-el9-gcc13-opt",
                sandbox="/work", container_image="docker://x").to_params(source_url=SOURCE, sandbox_name="jobO.x")
    assert made["container_name"] == "docker://x" and "multiStepExec" not in made


# --- inputs -------------------------------------------------------------------------------------


def input_item(made: dict[str, Any]) -> dict[str, Any]:
    return next(i for i in made["jobParameters"] if i.get("value") == '-i "${IN/T}"')


def test_match_and_anti_match_are_file_patterns():
    item = input_item(params(in_ds="d.a", match="*.root.*", anti_match="*_tid001*,*.tmp", n_skip_files=2))
    assert item["include"] == r".*\.root\..*"
    assert item["exclude"] == r"\.log\.tgz(\.\d+)*$,.*_tid001.*,.*\.tmp"
    assert item["offset"] == 2


def test_no_files_skipped_is_no_offset():
    assert "offset" not in input_item(params(in_ds="d.a", n_skip_files=0))


@pytest.mark.parametrize("names", [["a.1", " b.2 ", ""], '["a.1", "b.2"]', "['a.1', 'b.2']"])
def test_a_file_list_is_given_to_the_input(names):
    assert input_item(params(in_ds="d.a", input_file_list=names))["files"] == ["a.1", "b.2"]


def test_a_file_list_is_read_from_its_file(tmp_path):
    (tmp_path / "f.txt").write_text("a.1\n\n b.2\n")
    assert input_item(params(in_ds="d.a", input_file_list=str(tmp_path / "f.txt")))["files"] == ["a.1", "b.2"]


def test_a_file_list_that_cannot_be_read_fails_before_any_request(tmp_path):
    with pytest.raises(PandaInputError, match="input_file_list .* cannot be read .*prun fails too"):
        params(in_ds="d.a", input_file_list=str(tmp_path / "missing.txt"))


@pytest.mark.parametrize("value, passed", [
    ("IN:in.txt", "IN:in.txt"),
    ("%IN:in.txt,%BKG:bkg.txt", "IN:in.txt,BKG:bkg.txt"),
    ({"IN": "in.txt", "BKG": "b.txt"}, "IN:in.txt,BKG:b.txt"),
])
def test_input_lists_are_written_for_the_job(value, passed):
    made = params(in_ds="d.a", write_input_to_txt=value)
    assert made["jobParameters"][-1] == {"type": "constant", "value": f"--writeInputToTxt {passed} "}


def test_more_files_per_job_need_a_higher_ceiling():
    made = params(in_ds="d.a", n_files_per_job=300, max_files_per_job=500)
    assert (made["nFilesPerJob"], made["nMaxFilesPerJob"]) == (300, 500)


def test_files_per_job_over_the_ceiling_are_cut_to_it_with_prun_s_warning():
    with pytest.warns(UserWarning, match="n_files_per_job=300 is more than max_files_per_job=200: prun sets it to 200"):
        made = params(in_ds="d.a", n_files_per_job=300, n_jobs=2)
    assert (made["nFilesPerJob"], made["nFiles"], made["nMaxFilesPerJob"]) == (200, 400, 200)


@pytest.mark.parametrize("gb, made", [(10, {"nGBPerJob": 10}), ("MAX", {})])
def test_a_size_per_job_is_sent_unless_it_is_prun_s_default(gb, made):
    assert {k: v for k, v in params(in_ds="d.a", n_gb_per_job=gb).items() if k == "nGBPerJob"} == made


def test_skipping_empty_files_reads_their_real_number_of_events():
    made = params(in_ds="d.a", skip_empty_input=True)
    assert (made["skipEmptyInput"], made["useRealNumEvents"]) == (True, True)
    assert "useRealNumEvents" not in params(in_ds="d.a", skip_empty_input=True, n_events_per_file=100)


def test_input_flags_make_their_task_parameters():
    made = params(in_ds="d.a", force_staged=True, avoid_vp=True)
    assert (made["useLocalIO"], made["avoidVP"]) == (1, True)


@pytest.mark.parametrize("fields, words", [
    (dict(n_files=3), "n_files has no effect without an input dataset (in_ds): prun ignores it"),
    (dict(n_events_per_file=3), "n_events_per_file has no effect"),
    (dict(match="*.root"), "match has no effect"),
    (dict(exec="cat %IN"), "exec uses %IN but the task has no input dataset"),
    (dict(in_ds="d.a", exec="cat %INPUT"), "%INPUT, which is neither a prun placeholder nor a secondary stream"),
    (dict(in_ds="d.a", exec="cat %IN2"), "%IN2, which is neither"),
    (dict(max_attempt=51), "max_attempt=51 is over prun's limit of 50"),
])
def test_what_prun_accepts_and_ignores_is_accepted_with_a_warning(fields, words):
    with pytest.warns(UserWarning, match=re.escape(words)):
        made = params(**fields)
    assert "maxAttempt" not in made and "nFiles" not in made


@pytest.mark.parametrize("command", ["ana %IN > log_$(date +%FT%T).txt", "printf '%s %d' a 1 %IN",
                                     "run %IN %BKG", "x=%OUT.root %IN"])
def test_shell_percent_signs_are_passed_on_without_a_warning(command):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        made = params(in_ds="d.a", exec=command, secondary=[SecondaryInput("BKG", "d.b", 1)])
    assert made["cliParams"].startswith(f'prun --exec "{command}"')


def test_a_dbrelease_in_exec_is_an_input_of_the_job():
    made = params(exec="athena.py %DB:ddo.x:DBRelease-1.tar.gz")
    assert made["jobParameters"][-2:] == [
        {"type": "template", "param_type": "input", "value": "--dbrFile=${DBR}", "dataset": "ddo.x"},
        {"type": "constant", "value": "--noExpandDBR"}]
    assert params(exec="athena.py %DB:LATEST")["jobParameters"][-2]["dataset"] == "DBR_LATEST"


# --- outputs: merging, missing outputs, destination, official names ------------------------------


def test_merged_outputs_are_merged_from_the_sandbox():
    made = task(in_ds="d.a", outputs=["o.root"], merge_output=True, sandbox="/w").to_params(
        source_url=SOURCE, sandbox_name="jobO.x.tar.gz")
    assert made["mergeOutput"] is True and "nGBPerMergeJob" not in made and "log_merge" not in made
    assert made["mergeSpec"] == {"useLocalIO": 1, "jobParameters": "-r . -a jobO.x.tar.gz --sourceURL ${SURL} "
                                                                   "${TRN_OUTPUT:OUTPUT} ${TRN_LOG:LOG}"}


def test_merged_outputs_without_a_sandbox_name_none():
    assert params(in_ds="d.a", outputs=["o.root"], merge_output=True)["mergeSpec"]["jobParameters"] == \
        "-r . --sourceURL ${SURL} ${TRN_OUTPUT:OUTPUT} ${TRN_LOG:LOG}"


def test_a_merge_script_merges_and_the_log_can_be_merged_too():
    made = params(in_ds="d.a", outputs=["o.root"], merge_script="hadd -f %OUT %IN", merge_log=True,
                  n_gb_per_merge_job=20, cmt_config="x86_64-el9-gcc13-opt")
    assert made["mergeOutput"] is True and made["nGBPerMergeJob"] == 20
    assert made["mergeSpec"]["jobParameters"] == ('-r . -j "hadd -f %OUT %IN" --cmtConfig x86_64-el9-gcc13-opt '
                                                  "--sourceURL ${SURL} ${TRN_OUTPUT:OUTPUT} "
                                                  "${TRN_LOG_MERGE:LOG_MERGE}")
    assert made["log_merge"] == {"dataset": "user.alice.unit.merge_log/", "container": "user.alice.unit.merge_log/",
                                 "type": "template", "param_type": "output", "mergeOnly": True,
                                 "value": "user.alice.unit.log.$JEDITASKID.${SN}.merge_log.tgz"}


def test_outputs_allowed_missing_are_flagged_and_named_to_the_job():
    made = params(outputs=["out.root", "hist:h.root", "regex|x.*"], allow_no_output="h.root,x.*")
    flagged = [i["value"] for i in made["jobParameters"] if i.get("allowNoOutput")]
    assert flagged == ["user.alice.$JEDITASKID._${SN/P}.h.root", "regex|x.*"]
    assert {"type": "constant", "value": "--allowNoOutput=user.alice.$JEDITASKID._${SN/P}.h.root"} \
        in made["jobParameters"]


def test_outputs_go_to_the_storage_element_asked_for():
    assert {i.get("destination") for i in params(outputs=["a.root", "b.root"], dest_se="SE_X")["jobParameters"]
            if i.get("param_type") == "output"} == {"SE_X"}


@pytest.mark.parametrize("out_ds", ["group.phys-higgs.ntup.v1", "group15.perf-muons.x"])
def test_official_outputs_have_group_names(out_ds):
    made = params(out_ds=out_ds, official=True, nickname="alice")
    assert made["official"] is True and made["taskName"] == out_ds + "/"


def test_an_official_task_may_have_a_long_merged_name_as_prun_checks_no_length_then():
    params(out_ds="group.phys-higgs." + "x" * 103, official=True, merge_output=True)


def test_a_container_never_builds():
    made = task(container_image="docker://x", build=True, sandbox="/w").to_params(source_url=SOURCE,
                                                                                   sandbox_name="jobO.x")
    assert "buildSpec" not in made and {"type": "constant", "value": "-a jobO.x"} in made["jobParameters"]


# --- submission -------------------------------------------------------------------------------


@pytest.mark.parametrize("site, made", [
    ("AUTO", (None, None)),
    ("ANALY_A", ("ANALY_A", None)),
    (["ANALY_A", "AUTO"], (None, ["ANALY_A", "AUTO"])),
    ("A,B,A", (None, ["A", "B"])),
])
def test_sites_are_given_as_prun_gives_them(site, made):
    got = params(site=site)
    assert (got["site"], got["includedSite"]) == made


def test_excluded_sites_may_hold_wildcards():
    assert params(excluded_sites=["ANALY_BNL*", "*_TEST"])["excludedSite"] == ["ANALY_BNL*", "*_TEST"]


def test_submission_flags_make_their_task_parameters():
    made = task(no_email=True, disable_auto_retry=True, os_matching=True, use_new_code=True, sandbox="/w").to_params(
        source_url=SOURCE, sandbox_name="jobO.x")
    assert (made["noEmail"], made["disableAutoRetry"], made["osMatching"], made["fixedSandbox"]) == \
        (True, 1, True, "jobO.x")


def test_a_scoped_secondary_dataset_is_written_with_hash_separators():
    assert SecondaryInput("BKG", "mc23:mc23.x", 2, pattern="*.root", n_skip=1).prun_option() == \
        "BKG#2#mc23:mc23.x#*.root#1"
    assert SecondaryInput("BKG", "d.b", 2, pattern="a:b").prun_option() == "BKG#2#d.b#a:b"
    assert SecondaryInput("BKG", "mc23:mc23.x", 2).prun_option() == "BKG#2#mc23:mc23.x"


def test_the_command_line_keeps_an_option_with_its_value_as_prun_records_it():
    assert prun._command_line(["prun", "--exec=echo hi", "--nJobs=3"]) == 'prun --exec="echo hi" --nJobs=3'


# --- shell text and Jinja -------------------------------------------------------------------------


def test_a_bash_hash_brace_is_text_not_a_jinja_comment():
    builder = task(in_ds="d.a", exec='f=(%IN); echo "${#f[@]} files in {{ params.n }} jobs"')
    fields = builder.resolve({"params": {"n": 3}})
    assert fields["exec"] == 'f=(%IN); echo "${#f[@]} files in 3 jobs"'


def test_a_jinja_statement_in_shell_text_is_refused_at_parse_time_with_the_fix():
    with pytest.raises(PandaInputError, match=re.escape("exec: Jinja cannot read")) as info:
        task(exec="printf '{%s}\\n' a")
    assert "{% raw %}...{% endraw %}" in str(info.value) and "{{ '{%' }}" in str(info.value)


@pytest.mark.parametrize("exec_", ["{% raw %}printf '{%s}' a{% endraw %}", "printf '{{ '{%' }}s}' a"])
def test_the_documented_forms_of_a_literal_jinja_statement_render_to_the_shell_text(exec_):
    from airflow_provider_panda.builder import prun as module

    fields = task(exec=exec_).resolve({})
    assert fields["exec"] == "printf '{%s}' a"
    made = module.PrunTask.from_rendered(fields).to_params(source_url=SOURCE)
    assert made["cliParams"].startswith("prun --exec \"printf '{%s}' a\"")
