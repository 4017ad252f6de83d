"""Every record of the hub's C4 files and of the local copy, in the order each is read.

    python tests/scripts/hub_records.py OUT.json LOCAL_C4_DIR

(with the environment of ``local_hub.hub_env``). Writes, per split and source, the files in
order and each record as ``[file, record index, sha1 of its text]``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

from motlab.data.sources import hub_files, local_c4_files


def records(files) -> dict:
    out = []
    for f in files:
        for index, text, problem in f.read("text"):
            assert problem is None, (f.name, index, problem)
            out.append([os.path.basename(f.name), index, hashlib.sha1(text.encode()).hexdigest()])
    return {"files": [os.path.basename(f.name) for f in files], "records": out}


def main() -> None:
    out, local = sys.argv[1], sys.argv[2]
    result = {}
    for split in ("train", "validation"):
        result[split] = {
            "hub": records(hub_files("allenai/c4", "en", split)),
            "local": records(local_c4_files(local, "en", split)),
        }
    with open(out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
