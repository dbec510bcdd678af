"""The module's size budget. Every worker of every Envoy holds the module, and V8 compiles all of
its code before the first request (start-up follows code size: tests/bench/results.md), so growth
is a regression to be decided on, not an accident. When the module outgrows the budget the test
prints where the bytes go (tests/bench/wasm_size.py); raise BUDGET_KIB only with a reason in the
commit, and say it in tests/README.md (Performance).

The budget holds for the module `make build` ships: cargo's module optimised by binaryen's
wasm-opt, without its `name` section. Without wasm-opt the module is larger and this test fails:
`make deps` installs it (Debian package `binaryen`)."""
import os
import sys

from harness import ROOT, WASM

sys.path.insert(0, os.path.join(ROOT, "tests", "bench"))
import wasm_size  # noqa: E402

# 2,576 KiB measured on 2026-12-05 after boon and wasm-opt, then 2,605 with Envoy's
# verify_signature (DER and protobuf encoding, the jwt-simple-compatible parse), then 2,744 with
# issue 18 (RFC 9421 message signatures: structured fields, signature bases, RSA-PSS, the nonce
# store; mutual-TLS identities), which the issue requires, then 2,763 with signers' fetched key
# sets (`remote_keys`: a second kind of remote key set, its parsing and refresh), then 2,872 with
# issue 19 (revocation lists: 22 KiB; per-caller detection: 74 KiB, of which about 40 are the
# serde_path_to_error walk of its wire structs). Issue 16's aim is 2,048 KiB: not met yet.
BUDGET_KIB = 2888

NAMED = os.path.join(os.path.dirname(WASM), "tollgate.named.wasm")
CARGO = os.path.join(os.path.dirname(WASM), "deps", "tollgate.wasm")


def test_the_module_fits_its_budget():
    size = os.path.getsize(WASM)
    if size > BUDGET_KIB * 1024:
        detail = wasm_size.markdown(wasm_size.analyse(NAMED if os.path.exists(NAMED) else CARGO), 25)
        raise AssertionError(
            f"{WASM} is {size // 1024} KiB, over its budget of {BUDGET_KIB} KiB "
            f"(is wasm-opt installed? `make deps`)\n\n{detail}")


def test_the_shipped_module_has_no_names_and_its_named_copy_the_same_code():
    shipped = wasm_size.analyse(WASM)
    names = [name for name, _ in shipped["sections"] if name == "custom: name"]
    assert not names, "the shipped module still has its name section"
    assert os.path.exists(NAMED), f"{NAMED} is missing: `make build` writes it with wasm-opt"
    named = wasm_size.analyse(NAMED)
    assert named["functions"], "the named copy has no function names"

    def code(path):
        buf = open(path, "rb").read()
        return next(buf[start:start + size] for sid, _, start, size in wasm_size.sections(buf) if sid == 10)

    # Same bytes of code, so `func[N]` of a trap in the shipped module is function N of the copy.
    assert code(WASM) == code(NAMED)


def test_the_analyser_attributes_the_code_to_crates():
    report = wasm_size.analyse(NAMED)
    crates = report["crates"]
    for crate in ("tollgate", "boon", "serde_json", "proxy_wasm"):
        assert crates.get(crate, 0) > 0, sorted(crates)
    assert "jsonschema" not in crates
    attributed = sum(size for crate, size in crates.items() if not crate.startswith("("))
    assert attributed > 0.95 * sum(crates.values()), sorted(crates.items(), key=lambda c: -c[1])[:10]
