#!/usr/bin/env python3
"""A tiny proxy-wasm module that traps on purpose, written as raw WebAssembly bytes (no compiler).

Tollgate must never trap (STYLE.md rule 1), so the failure-mode tests need a stand-in whose VM
dies on demand. The module speaks proxy-wasm ABI 0.2.1 and does nothing except:

- every HTTP request: read `:path` (proxy_get_header_map_value) and continue - the request
  passes through, which shows that the VM is alive;
- a request whose path starts with `/trap`: execute `unreachable`, a Wasm trap. Envoy marks the
  VM failed (proxy-wasm FailState::RuntimeError) and applies the plugin's `failure_policy`.

The exports are exactly what Envoy 1.40's proxy-wasm host looks up (proxy-wasm-cpp-host
`WasmBase::getFunctions`): `memory`, `proxy_abi_version_0_2_1` (how the ABI version is detected),
`proxy_on_memory_allocate` (the host's `malloc`; the module fails to load without one),
`proxy_on_context_create`, `proxy_on_vm_start`, `proxy_on_configure`, `proxy_on_request_headers`.
Signatures must match the host's exactly (V8 checks them), all i32 on wasm32.

`build(all_callbacks=True)` also exports empty versions of the other per-stream callbacks the
proxy-wasm Rust SDK exports (request/response body and trailers, response headers, log, done,
delete): Envoy calls every callback a module exports, so `make bench` uses it to show what
entering the VM that often costs before any work is done.

    tests/e2e/trap_module.py OUT.wasm
"""
import sys

TRAP_PREFIX = b"/trap"

I32 = 0x7F
FUNC = 0x60

# Memory layout (one 64 KiB page): the host writes the header value's pointer and length at 0 and
# 4; the key `:path` lives at 16; proxy_on_memory_allocate hands out memory from HEAP upwards.
RET_PTR, RET_LEN, KEY_PTR, HEAP = 0, 4, 16, 1024
KEY = b":path"


def uleb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def sleb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        done = (n == 0 and not byte & 0x40) or (n == -1 and byte & 0x40)
        out.append(byte | (0 if done else 0x80))
        if done:
            return bytes(out)


def vec(items) -> bytes:
    items = list(items)
    return uleb(len(items)) + b"".join(items)


def name(s: str) -> bytes:
    return uleb(len(s)) + s.encode()


def section(sid: int, body: bytes) -> bytes:
    return bytes([sid]) + uleb(len(body)) + body


def functype(params, results) -> bytes:
    return bytes([FUNC]) + vec(bytes([t]) for t in params) + vec(bytes([t]) for t in results)


# Opcodes used below.
UNREACHABLE, IF, END, RETURN, CALL, BLOCK_VOID = 0x00, 0x04, 0x0B, 0x0F, 0x10, 0x40
LOCAL_GET, GLOBAL_GET, GLOBAL_SET = 0x20, 0x23, 0x24
I32_LOAD, I32_LOAD8_U, I32_CONST = 0x28, 0x2D, 0x41
I32_EQZ, I32_NE, I32_GE_U, I32_ADD, I32_OR = 0x45, 0x47, 0x4F, 0x6A, 0x72


def const(n: int) -> bytes:
    return bytes([I32_CONST]) + sleb(n)


def load32(offset_expr: bytes) -> bytes:
    return offset_expr + bytes([I32_LOAD, 2, 0])  # align 4, offset 0


def body(code: bytes, locals_=()) -> bytes:
    b = vec(uleb(n) + bytes([t]) for n, t in locals_) + code + bytes([END])
    return uleb(len(b)) + b


def build(all_callbacks: bool = False) -> bytes:
    types = [
        functype([I32], [I32]),                     # 0 proxy_on_memory_allocate
        functype([I32, I32], []),                   # 1 proxy_on_context_create
        functype([I32, I32], [I32]),                # 2 proxy_on_vm_start / proxy_on_configure
        functype([I32, I32, I32], [I32]),           # 3 proxy_on_request_headers
        functype([], []),                           # 4 proxy_abi_version_0_2_1
        functype([I32, I32, I32, I32, I32], [I32]), # 5 import proxy_get_header_map_value
        functype([I32], []),                        # 6 proxy_on_log / proxy_on_delete
    ]
    imports = [name("env") + name("proxy_get_header_map_value") + bytes([0x00]) + uleb(5)]
    # Function indices: 0 is the import; ours start at 1.
    funcs = [
        ("proxy_on_memory_allocate", 0),
        ("proxy_on_context_create", 1),
        ("proxy_on_vm_start", 2),
        ("proxy_on_configure", 2),
        ("proxy_on_request_headers", 3),
        ("proxy_abi_version_0_2_1", 4),
    ]

    # Bump allocator over global 0: return the old top, advance by `size`.
    malloc = (bytes([GLOBAL_GET, 0]) + bytes([GLOBAL_GET, 0, LOCAL_GET, 0, I32_ADD, GLOBAL_SET, 0]))
    # INVARIANT: the host only allocates during proxy_get_header_map_value below, and nothing
    # allocated outlives one proxy_on_request_headers call, so each call resets the heap.
    prefix_word = int.from_bytes(TRAP_PREFIX[:4], "little")
    on_request_headers = (
        const(HEAP) + bytes([GLOBAL_SET, 0])
        # status = proxy_get_header_map_value(request headers, ":path", &ptr, &len)
        + const(0) + const(KEY_PTR) + const(len(KEY)) + const(RET_PTR) + const(RET_LEN)
        + bytes([CALL, 0])
        # A missing :path (status != 0) or a path shorter than the prefix continues.
        + bytes([IF, BLOCK_VOID]) + const(0) + bytes([RETURN, END])
        + load32(const(RET_LEN)) + const(len(TRAP_PREFIX)) + bytes([I32_GE_U, I32_EQZ])
        + bytes([IF, BLOCK_VOID]) + const(0) + bytes([RETURN, END])
        # if *(u32*)ptr != "/tra" || ptr[4] != 'p': continue
        + load32(load32(const(RET_PTR))) + const(prefix_word) + bytes([I32_NE])
        + load32(const(RET_PTR)) + bytes([I32_LOAD8_U, 0, 4]) + const(TRAP_PREFIX[4]) + bytes([I32_NE])
        + bytes([I32_OR])
        + bytes([IF, BLOCK_VOID]) + const(0) + bytes([RETURN, END])
        + bytes([UNREACHABLE])
    )
    codes = [
        body(malloc),
        body(b""),
        body(const(1)),  # proxy_on_vm_start: true
        body(const(1)),  # proxy_on_configure: true (the configuration is ignored)
        body(on_request_headers),
        body(b""),
    ]
    if all_callbacks:
        # name, type, body: continue (0) or, for proxy_on_done, "done" (1).
        for n, t, code in [
            ("proxy_on_request_body", 3, const(0)),
            ("proxy_on_request_trailers", 2, const(0)),
            ("proxy_on_response_headers", 3, const(0)),
            ("proxy_on_response_body", 3, const(0)),
            ("proxy_on_response_trailers", 2, const(0)),
            ("proxy_on_log", 6, b""),
            ("proxy_on_done", 0, const(1)),
            ("proxy_on_delete", 6, b""),
        ]:
            funcs.append((n, t))
            codes.append(body(code))
    exports = [name("memory") + bytes([0x02]) + uleb(0)]
    exports += [name(n) + bytes([0x00]) + uleb(i + 1) for i, (n, _) in enumerate(funcs)]
    heap_global = bytes([I32, 0x01]) + const(HEAP) + bytes([END])  # mutable i32
    data = bytes([0x00]) + const(KEY_PTR) + bytes([END]) + uleb(len(KEY)) + KEY

    return (
        b"\0asm" + (1).to_bytes(4, "little")
        + section(1, vec(types))
        + section(2, vec(imports))
        + section(3, vec(uleb(t) for _, t in funcs))
        + section(5, vec([bytes([0x00]) + uleb(1)]))  # one memory, min 1 page
        + section(6, vec([heap_global]))
        + section(7, vec(exports))
        + section(10, vec(codes))
        + section(11, vec([data]))
    )


def write(path: str, all_callbacks: bool = False) -> str:
    with open(path, "wb") as f:
        f.write(build(all_callbacks))
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__.splitlines()[-1].strip())
    write(sys.argv[1])
