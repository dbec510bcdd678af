#!/usr/bin/env python3
"""Where the bytes of a wasm module go: sections, and code by crate.

    python3 tests/bench/wasm_size.py target/wasm32-wasip1/release/tollgate.wasm [--top 20]
    python3 tests/bench/wasm_size.py --name 1234 target/wasm32-wasip1/release/tollgate.named.wasm

Reads the module's sections; when it still has a `name` section (the plain cargo build keeps
one), each function body in the code section is attributed to the crate its (demangled) name
starts with, and the largest functions are listed. `--name N` prints the name of function N (a
trap in Envoy's log names `func[N]` of the shipped module, which has no names; `make build` keeps
tollgate.named.wasm, the same module with them). Used by `make bench` (the size figures of
tests/bench/results.md) and by the size budget test (tests/e2e/test_size_budget.py), which prints
this breakdown when the module grows past its budget.
"""

import argparse
import re
import sys
from collections import defaultdict

SECTION_NAMES = {
    0: "custom",
    1: "type",
    2: "import",
    3: "function",
    4: "table",
    5: "memory",
    6: "global",
    7: "export",
    8: "start",
    9: "element",
    10: "code",
    11: "data",
    12: "datacount",
}


def leb_u32(buf, pos):
    """An unsigned LEB128 at pos: (value, next position)."""
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def read_name(buf, pos):
    n, pos = leb_u32(buf, pos)
    return buf[pos : pos + n].decode("utf-8", "replace"), pos + n


def sections(buf):
    """[(id, name, start of payload, payload size)] of the module."""
    if buf[:4] != b"\0asm":
        raise ValueError("not a wasm module")
    out, pos = [], 8
    while pos < len(buf):
        sid = buf[pos]
        size, start = leb_u32(buf, pos + 1)
        name = SECTION_NAMES.get(sid, f"id {sid}")
        if sid == 0:
            name = "custom: " + read_name(buf, start)[0]
        out.append((sid, name, start, size))
        pos = start + size
    return out


def imported_functions(buf, start):
    count, pos = leb_u32(buf, start)
    funcs = 0
    for _ in range(count):
        _, pos = read_name(buf, pos)
        _, pos = read_name(buf, pos)
        kind = buf[pos]
        pos += 1
        if kind == 0:  # function: type index
            _, pos = leb_u32(buf, pos)
            funcs += 1
        elif kind == 1:  # table: reftype, limits
            pos += 1
            flags = buf[pos]
            _, pos = leb_u32(buf, pos + 1)
            if flags & 1:
                _, pos = leb_u32(buf, pos)
        elif kind == 2:  # memory: limits
            flags = buf[pos]
            _, pos = leb_u32(buf, pos + 1)
            if flags & 1:
                _, pos = leb_u32(buf, pos)
        elif kind == 3:  # global: valtype, mutability
            pos += 2
        else:  # tag
            pos += 1
            _, pos = leb_u32(buf, pos)
    return funcs


def body_sizes(buf, start):
    count, pos = leb_u32(buf, start)
    sizes = []
    for _ in range(count):
        size, body = leb_u32(buf, pos)
        sizes.append(size + (body - pos))
        pos = body + size
    return sizes


def function_names(buf, start, size):
    """{function index: name} from the `name` section's function subsection."""
    _, pos = read_name(buf, start)
    end = start + size
    names = {}
    while pos < end:
        kind = buf[pos]
        sub_size, sub = leb_u32(buf, pos + 1)
        if kind == 1:
            count, p = leb_u32(buf, sub)
            for _ in range(count):
                idx, p = leb_u32(buf, p)
                names[idx], p = read_name(buf, p)
        pos = sub + sub_size
    return names


V0_CRATE = re.compile(r"(?<!N)C(?:s[0-9A-Za-z]*_)?(\d+)")


def v0_crate(name):
    """The first crate root in a v0-mangled symbol (`C[s<hash>_]<len><name>`): the crate that
    defines the function, or for a trait impl the crate holding the impl."""
    for m in V0_CRATE.finditer(name):
        n = int(m.group(1))
        ident = name[m.end() : m.end() + n]
        if len(ident) == n and re.fullmatch(r"[a-z_][a-z0-9_]*", ident):
            return ident
    return "(unknown)"


GENERIC_IMPL = re.compile(r"^<(?:&(?:mut )?)?(?:\[|\()?(?P<path>[A-Za-z_][\w]*)")


def crate_of(name):
    """The crate a demangled Rust symbol belongs to: the first path segment, or for
    `<T as Trait>::f` the crate of T (the code is T's, even when the trait is core's)."""
    m = GENERIC_IMPL.match(name) if name.startswith("<") else None
    head = m.group("path") if m else re.split(r"::|<|\$|\.", name, maxsplit=1)[0]
    if name.startswith("_R"):
        return v0_crate(name)
    if name.startswith("_ZN"):
        return "(legacy-mangled)"
    if head in ("", "dyn", "impl"):
        return "(other)"
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", head):
        return "(non-Rust: " + ("libc/wasi" if head else "?") + ")"
    return head


def analyse(path):
    buf = open(path, "rb").read()
    secs = sections(buf)
    report = {"total": len(buf), "sections": [], "crates": {}, "functions": []}
    imports = 0
    bodies = []
    names = {}
    for sid, name, start, size in secs:
        report["sections"].append((name, size))
        if sid == 2:
            imports = imported_functions(buf, start)
        elif sid == 10:
            bodies = body_sizes(buf, start)
        elif name == "custom: name":
            names = function_names(buf, start, size)
    if names:
        crates = defaultdict(int)
        funcs = []
        for i, size in enumerate(bodies):
            fname = names.get(imports + i, f"func[{imports + i}]")
            crates[crate_of(fname)] += size
            funcs.append((size, fname))
        report["crates"] = dict(crates)
        report["functions"] = sorted(funcs, reverse=True)
    return report


def kib(n):
    return f"{n / 1024:,.0f}"


def markdown(report, top=20):
    lines = [f"module: {kib(report['total'])} KiB", "", "| section | KiB |", "|---|---:|"]
    for name, size in sorted(report["sections"], key=lambda s: -s[1]):
        if size >= 1024:
            lines.append(f"| {name} | {kib(size)} |")
    if report["crates"]:
        code = sum(report["crates"].values())
        lines += ["", f"code by crate ({kib(code)} KiB of function bodies):", "",
                  "| crate | KiB | share |", "|---|---:|---:|"]
        for crate, size in sorted(report["crates"].items(), key=lambda c: -c[1])[:top]:
            lines.append(f"| {crate} | {kib(size)} | {100 * size / code:.1f}% |")
        lines += ["", f"largest functions:", "", "| KiB | function |", "|---:|---|"]
        for size, fname in report["functions"][:top]:
            short = fname if len(fname) < 110 else fname[:107] + "..."
            lines.append(f"| {size / 1024:.1f} | `{short}` |")
    else:
        lines += ["", "(no name section: code is not attributed to crates)"]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("module")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--name", type=int, metavar="N", help="print the name of function N")
    args = ap.parse_args()
    if args.name is not None:
        buf = open(args.module, "rb").read()
        names = {}
        for _, name, start, size in sections(buf):
            if name == "custom: name":
                names = function_names(buf, start, size)
        print(names.get(args.name, f"func[{args.name}]: no name (is this the .named.wasm?)"))
        return 0
    print(markdown(analyse(args.module), args.top))


if __name__ == "__main__":
    sys.exit(main())
