"""Run panda-client 2.2.0's prun offline and print the task parameter map it builds, as JSON.

Used by tests/test_task_builder.py in a subprocess (PrunScript.main edits sys.argv, sets environment
variables, changes directory and may sys.exit). Input: argv[1] is a JSON list of prun options.
The environment names the server (PANDA_URL_SSL) and cache (PANDACACHE_URL) the test expects.
"""

import contextlib
import io
import json
import os
import sys
import tempfile


def main() -> None:
    options = json.loads(sys.argv[1])
    root = tempfile.mkdtemp(prefix="prun-witness-")
    os.environ["PANDA_CONFIG_ROOT"] = root
    os.chdir(root)
    from pandaclient import PrunScript

    sys.argv = ["prun", *options]
    chatter = io.StringIO()
    with contextlib.redirect_stdout(chatter):
        params = PrunScript.main(get_taskparams=True, dry_mode=True)
    print(json.dumps(params))


if __name__ == "__main__":
    main()
