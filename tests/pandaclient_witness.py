"""Run calls of the real panda-client 2.2.0 and print what it decoded, as JSON.

Used by the contract tests in a subprocess: panda-client reads its server and token from
environment variables when it is imported, so each run gets its own process.
Input (argv[1]): a JSON list of [function name, args, kwargs]. Output: a JSON list of
[status, value] with values made JSON-friendly (JobSpec -> dict of a few fields, datetimes -> iso).
"""

import json
import sys
from datetime import datetime


def plain(value):
    if hasattr(value, "PandaID") and hasattr(value, "jobStatus"):
        return {"PandaID": value.PandaID, "jobStatus": value.jobStatus, "jediTaskID": value.jediTaskID}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value


def main() -> None:
    from pandaclient import Client

    calls = json.loads(sys.argv[1])
    results = []
    for name, args, kwargs in calls:
        result = getattr(Client, name)(*args, **kwargs)
        if name == "get_user_name_from_token":
            results.append([0, plain(result)])
        else:
            status, value = result
            results.append([status, plain(value)])
    print(json.dumps(results))


if __name__ == "__main__":
    main()
