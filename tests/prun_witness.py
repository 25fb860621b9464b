"""Run panda-client 2.2.0's prun offline and print what it makes of command lines, as JSON.

Used by tests/test_task_builder.py in a subprocess (PrunScript.main edits sys.argv, sets environment
variables, changes directory and may sys.exit). The environment names the server (PANDA_URL_SSL) and
cache (PANDACACHE_URL) the test expects.

    prun_witness.py '<JSON list of prun options>'   # prints the task parameter map
    prun_witness.py < cases.json                    # prints one result per case, in order

A case is ``{"argv": [...], "env": {...}, "files": {name: text}, "mode": "params" | "options"}``:
``env`` is added to the environment (e.g. an Athena release set up with asetup), ``files`` are written
in prun's working directory first (e.g. an ``--inputFileList`` file), ``mode`` asks for the map
``PrunScript.main(get_taskparams=True, dry_mode=True)`` returns or for the options prun parsed
(``get_options=True``). Each case runs in its own forked process (prun keeps state in modules), as
``{"params": map}``, ``{"options": dict}`` or, when prun refuses, ``{"exit": code, "output": text}``.
"""

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SERVER = "https://pandaserver.example:25443"
CACHE = "https://pandacache.example:25443"
#: What prun reads from the submitting shell, left out of the witness's environment: the builder has no shell.
SHELL_ONLY = ("CMTCONFIG", "CMAKE_PREFIX_PATH", "PANDA_EXEC_STRING", "X509_USER_PROXY", "ALRB_USER_PLATFORM",
              "AtlasProject", "AtlasVersion", "AtlasBuildStamp", "AtlasBuildBranch", "AtlasReleaseType",
              "AtlasOffline_VERSION", "ROOTCOREDIR", "PANDA_AUTH")


# --- the test side: run cases in one witness process, remember the answers ---------------------------


def witness_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SHELL_ONLY and not k.endswith("_VERSION")}
    env.update(PANDA_BEHIND_REAL_LB="1", PANDA_URL="http://pandaserver.example:25080/server/panda",
               PANDA_URL_SSL=SERVER + "/server/panda", PANDACACHE_URL=CACHE + "/server/panda")
    return env


def athena_env(project: str, release: str, cmt_config: str) -> dict[str, str]:
    """The variables prun reads from a shell where ``asetup <project>,<release>`` set a CMake release up."""
    return {"AtlasProject": project, "AtlasVersion": release, f"{project}_VERSION": release,
            "AtlasReleaseType": "stable", "CMTCONFIG": cmt_config,
            "CMAKE_PREFIX_PATH": f"/tmp/prun-witness-build/{cmt_config}"}


_ANSWERS: dict[str, dict] = {}


def witness(cases: list[dict]) -> list[dict]:
    """What prun makes of each case (see the module's doc), run together in one witness process and
    remembered: a case already answered is not run again."""
    keys = [json.dumps(case, sort_keys=True) for case in cases]
    todo = list(dict.fromkeys(k for k in keys if k not in _ANSWERS))
    if todo:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve())], input="[" + ",".join(todo) + "]",
                              env=witness_env(), capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        _ANSWERS.update(zip(todo, json.loads(proc.stdout.strip().splitlines()[-1])))
    return [_ANSWERS[k] for k in keys]


def make_case(argv: list[str], env: dict | None = None, files: dict | None = None, mode: str = "params") -> dict:
    made: dict = {"argv": list(argv), "mode": mode}
    if env:
        made["env"] = env
    if files:
        made["files"] = files
    return made


def prun_params(argv: list[str], env: dict | None = None, files: dict | None = None) -> dict:
    """The map PrunScript.main(get_taskparams=True, dry_mode=True) returns for these prun options."""
    [answer] = witness([make_case(argv, env, files)])
    assert "params" in answer, f"prun did not make a map for {argv}: {answer}"
    return answer["params"]


def prun_options(argv: list[str]) -> dict:
    """The options prun parses from this command line (PrunScript.main(get_options=True))."""
    [answer] = witness([make_case(argv, mode="options")])
    assert "options" in answer, answer
    return answer["options"]


# --- the witness process ------------------------------------------------------------------------------


def run_case(case: dict) -> dict:
    """One prun run in a fresh working directory; what it returned, or how it exited."""
    from pandaclient import PrunScript

    root = tempfile.mkdtemp(prefix="prun-witness-")
    os.chdir(root)
    os.environ.update(case.get("env") or {})
    for name, text in (case.get("files") or {}).items():
        with open(os.path.join(root, name), "w") as handle:
            handle.write(text)
    sys.argv = ["prun", *case.get("argv", [])]
    sys.stdin = io.StringIO("y\n" * 10)  # prun asks before a large --memory; a user who types the line says yes
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            if case.get("mode") == "options":
                return {"options": PrunScript.main(get_options=True)}
            if case.get("mode") == "out_ds":
                return {"accepted": check_out_ds(case)}
            return {"params": PrunScript.main(get_taskparams=True, dry_mode=True)}
    except SystemExit as exc:
        return {"exit": exc.code, "output": chatter.getvalue()[-3000:]}


def check_out_ds(case: dict) -> bool:
    """prun's check of --outDS before a real submission (PsubUtils.checkOutDsName, not run in dry mode),
    for a user with this nickname and production roles in these groups (an x509 proxy's attributes)."""
    from pandaclient import PsubUtils

    roles = "".join(f"attribute : /atlas/{group}/Role=production\n" for group in case.get("groups", []))
    PsubUtils.get_proxy_info = lambda force, verbose: (0, roles)
    return PsubUtils.checkOutDsName(case["out_ds"], case.get("official", False), case.get("nickname", ""),
                                    case.get("merge", False))


def forked(case: dict) -> dict:
    """run_case in a child process, so that no case sees what an earlier one left in prun's modules."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read)
        try:
            result = run_case(case)
        except BaseException as exc:  # reported, not raised: the parent must hear back
            result = {"error": f"{type(exc).__name__}: {exc}"}
        with os.fdopen(write, "w") as out:
            json.dump(result, out, default=str)
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as answer:
        text = answer.read()
    os.waitpid(pid, 0)
    return json.loads(text) if text else {"error": "the witness process died"}


def main() -> None:
    os.environ["PANDA_CONFIG_ROOT"] = tempfile.mkdtemp(prefix="prun-witness-config-")
    from pandaclient import PrunScript  # noqa: F401  (imported once; each case forks from here)

    if len(sys.argv) > 1:
        result = forked({"argv": json.loads(sys.argv[1])})
        if "params" not in result:
            sys.exit(f"prun did not make a map: {result}")
        print(json.dumps(result["params"]))
        return
    cases = json.load(sys.stdin)
    print(json.dumps([forked(case) for case in cases], default=str))


if __name__ == "__main__":
    main()
