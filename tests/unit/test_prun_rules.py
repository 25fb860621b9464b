"""The PrunTask builder's own rules: refusals (each with its message), defaults, the splitting rules,
the dict form. The map's equality with prun's is tests/test_task_builder.py's witness, and its
catalogue of bad names and counts is not repeated here."""

from __future__ import annotations

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
    ("files per job over prun's limit", dict(in_ds="d.a", n_files_per_job=201), "n_files_per_job must be at most 200"),
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
    ("n_files without input", dict(n_files=3), "n_files needs an input dataset (in_ds)"),
    ("events per file without input", dict(n_events_per_file=3), "n_events_per_file needs an input dataset"),
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
    ("secondary pattern with a colon", dict(secondary=[SecondaryInput("BKG", "d.b", 1, pattern="a:b")]),
     "pattern of stream BKG must be a string without"),
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
    ("a stream placeholder without that stream", dict(exec="run %BKG"), "%BKG, which is not a prun placeholder"),
    ("label with capitals", dict(prod_source_label="User"), "prod_source_label"),
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
    for absent in ("ramCount", "coreCount", "maxAttempt", "maxWalltime", "workingGroup", "cloud", "buildSpec",
                   "container_name", "multiStepExec", "reuseSecOnDemand"):
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
                prod_source_label="user", nickname="alice", unique_name=False, extra={"taskPriority": 900})


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
