"""Write /usr/share/doc/edge-gateway/copyright (Debian's machine-readable format) to stdout.

Run it with the interpreter of the bundle being packaged (build-deb.sh does): it lists the
project itself and every distribution installed in the bundle, with the copyright lines and the
license text each one ships, so the file follows requirements.lock without being kept by hand.
A distribution whose license it cannot tell stops the build: add it to LICENSES below after
reading its license.
"""

from __future__ import annotations

import importlib.metadata as metadata
import re
import sys
import sysconfig
from pathlib import Path

APP = "/opt/edge-gateway"
# Distributions whose metadata names no SPDX expression or names an ambiguous one ("BSD"):
# read from their license files / upstream repositories.
LICENSES = {
    "aiomqtt": "BSD-3-Clause",
    "pyserial": "BSD-3-Clause",
}
CLASSIFIERS = {
    "License :: OSI Approved :: MIT License": "MIT",
    "License :: OSI Approved :: Apache Software License": "Apache-2.0",
    "License :: OSI Approved :: Mozilla Public License 2.0 (MPL 2.0)": "MPL-2.0",
}
SPDX = re.compile(r"^[A-Za-z0-9.+-]+( (OR|AND) [A-Za-z0-9.+-]+)*$")
# Licenses Debian ships in /usr/share/common-licenses: referred to, not copied.
COMMON = {"Apache-2.0", "MPL-2.0", "GPL-2", "GPL-3", "LGPL-2.1", "LGPL-3"}
# What a wheel holds besides the distribution's own code.
NOTES = {
    "cryptography": "The compiled module links OpenSSL (Apache-2.0) and Rust crates"
    " (MIT or Apache-2.0) statically.",
    "cffi": "The compiled module links libffi (MIT) statically.",
    "pydantic-core": "The compiled module is built from Rust crates under MIT or Apache-2.0.",
}
SKIP_FILES = {"AUTHORS", "AUTHORS.rst", "CREDITS.rst"}  # lists of names, not licenses
STANDARD_TEXT = {
    "MIT": """Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.""",
    "BSD-3-Clause": """Redistribution and use in source and binary forms, with or without
modification, are permitted provided that the following conditions are met:

1. Redistributions of source code must retain the above copyright notice, this
   list of conditions and the following disclaimer.
2. Redistributions in binary form must reproduce the above copyright notice,
   this list of conditions and the following disclaimer in the documentation
   and/or other materials provided with the distribution.
3. Neither the name of the copyright holder nor the names of its contributors
   may be used to endorse or promote products derived from this software
   without specific prior written permission.

THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS"
AND ANY EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE
IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE ARE
DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT HOLDER OR CONTRIBUTORS BE LIABLE
FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL
DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR
SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER
CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY,
OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE
OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.""",
}


def indent(text: str) -> str:
    """A DEP-5 continuation block: one leading space, blank lines as ' .'."""
    lines = [line.rstrip().expandtabs(8) for line in text.strip("\n").splitlines()]
    return "\n".join(" " + line if line else " ." for line in lines)


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def field(dist: metadata.Distribution, key: str) -> str:
    return str((dist.metadata.get_all(key) or [""])[0])


def license_of(dist: metadata.Distribution) -> str:
    name = normalize(dist.metadata["Name"])
    if name in LICENSES:
        return LICENSES[name]
    expression = field(dist, "License-Expression").strip()
    if expression:
        return expression
    declared = field(dist, "License").strip()
    if declared and SPDX.match(declared) and declared not in {"BSD", "UNKNOWN"}:
        return declared
    found = {CLASSIFIERS[c] for c in dist.metadata.get_all("Classifier") or [] if c in CLASSIFIERS}
    if len(found) == 1:
        return found.pop()
    sys.exit(f"make-copyright: cannot tell the license of {name}: add it to LICENSES")


def debian_expression(spdx: str) -> str:
    return spdx.replace(" OR ", " or ").replace(" AND ", " and ")


def is_apache_text(text: str) -> bool:
    return "Apache License" in text and "TERMS AND CONDITIONS" in text


def license_files(dist: metadata.Distribution) -> list[Path]:
    files = []
    for entry in dist.files or []:
        path = Path(str(dist.locate_file(entry)))
        if (
            ".dist-info" in entry.parts[0]
            and path.name not in SKIP_FILES
            and (len(entry.parts) > 2 or re.match(r"(?i)(licen[cs]e|copying|notice)", path.name))
            and path.is_file()
            and path.name not in {"METADATA", "RECORD", "WHEEL", "INSTALLER", "REQUESTED"}
        ):
            files.append(path)
    return sorted(files)


def holders(texts: list[str], dist: metadata.Distribution) -> list[str]:
    lines = []
    for text in texts:
        for line in text.splitlines():
            match = re.match(r"\s*(?:Copyright|\(c\)|©)\s*(?:\(c\)|©)?\s*(.+)", line, re.I)
            if match and re.search(r"\d{4}|[A-Z][a-z]", match.group(1)):
                holder = match.group(1).strip()
                if holder not in lines and "notice" not in holder.lower():
                    lines.append(holder)
    if not lines:
        author = field(dist, "Author") or field(dist, "Author-email")
        lines.append(f"the {dist.metadata['Name']} authors" + (f" ({author})" if author else ""))
    return lines


def top_levels(dist: metadata.Distribution, site: Path, prefix: str) -> list[str]:
    tops = set()
    for entry in dist.files or []:
        path = Path(str(dist.locate_file(entry))).resolve()
        try:
            relative = path.relative_to(site)
        except ValueError:
            continue  # bin/ scripts: covered by the project's paragraph
        first = relative.parts[0]
        tops.add(f"{prefix}/{first}/*" if len(relative.parts) > 1 else f"{prefix}/{first}")
    return sorted(tops)


def main() -> None:
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    prefix = APP.lstrip("/") + "/" + str(site.relative_to(Path(sys.prefix).resolve()))
    used: set[str] = set()
    paragraphs = [
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
        "Upstream-Name: edge-gateway\n"
        "Comment: The application and the Python distributions it needs are installed in a\n"
        f" virtual environment under {APP}, from packaging/requirements.lock (hashes) at\n"
        " build time. Each distribution's paragraph gives its copyright and its license\n"
        " as its wheel ships them.",
        "Files: *\nCopyright: the edge-gateway authors\nLicense: Apache-2.0",
    ]
    used.add("Apache-2.0")
    dists = sorted(metadata.distributions(), key=lambda d: normalize(d.metadata["Name"]))
    for dist in dists:
        name = normalize(dist.metadata["Name"])
        if name == "edge-gateway":
            continue
        spdx = license_of(dist)
        ids = set(re.split(r" (?:OR|AND) ", spdx))
        files = license_files(dist)
        texts = [f.read_text(encoding="utf-8", errors="replace") for f in files]
        own = [t for f, t in zip(files, texts, strict=True) if not is_apache_text(t)]
        copyright_lines = holders(own, dist)
        block = [
            "Files: " + "\n ".join(top_levels(dist, site, prefix)),
            "Copyright: " + "\n ".join(copyright_lines),
        ]
        comment = [f"{dist.metadata['Name']} {dist.version}, from PyPI."]
        if name in NOTES:
            comment.append(NOTES[name])
        for bundled in sorted(p for p in top_levels(dist, site, prefix) if ".libs/" in p):
            comment.append(f"{bundled.rstrip('/*')} holds shared libraries the wheel bundles.")
        if own:
            # The license as the distribution ships it, verbatim.
            block.append("License: " + debian_expression(spdx) + "\n" + indent("\n\n".join(own)))
            used |= ids & COMMON
            comment.append(
                "Where the license names one in /usr/share/common-licenses, its text is there."
            )
        else:
            block.append("License: " + debian_expression(spdx))
            used |= ids
        block.append("Comment: " + " ".join(comment))
        paragraphs.append("\n".join(block))
    for name in sorted(used):
        if name in COMMON:
            text = (
                f"On Debian systems, the full text of the {name} license can be found in\n"
                f"/usr/share/common-licenses/{name}."
            )
        elif name in STANDARD_TEXT:
            text = STANDARD_TEXT[name]
        else:
            sys.exit(f"make-copyright: no text for {name}: add it to STANDARD_TEXT")
        paragraphs.append(f"License: {name}\n{indent(text)}")
    sys.stdout.write("\n\n".join(paragraphs) + "\n")


if __name__ == "__main__":
    main()
