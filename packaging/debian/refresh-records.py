"""Make the RECORD files of a bundle's site-packages tell the truth again.

build-deb.sh changes some installed files after pip wrote their hashes: it rewrites the staging
path in the entry-point script, strips shared objects, blanks shebang lines of library modules
and deletes the dependencies' own commands. Each RECORD gets the sha256 and size of what is
really in the package (and loses the lines of files that are gone), which also keeps the build
reproducible: the hashes no longer depend on the temporary directory the bundle was built in.
Usage: refresh-records.py SITE_PACKAGES
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import sys
from pathlib import Path


def digest(path: Path) -> str:
    raw = hashlib.sha256(path.read_bytes()).digest()
    return "sha256=" + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def main(site: Path) -> None:
    for record in sorted(site.glob("*.dist-info/RECORD")):
        rows = []
        with record.open(newline="", encoding="utf-8") as file:
            for row in csv.reader(file):
                if not row:
                    continue
                path = (site / row[0]).resolve() if not Path(row[0]).is_absolute() else None
                if path is None or row[0].endswith("RECORD"):
                    rows.append(row)
                elif path.is_file():
                    rows.append([row[0], digest(path), str(path.stat().st_size)])
                # else: deleted by the build (a dependency's command): not in the package
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(rows)
        record.write_text(out.getvalue(), encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
