#!/usr/bin/env python3
"""Writes the built module as an OCI image layout that Istio's WasmPlugin and Envoy Gateway pull.

    envoy/tools/oci_image.py target/wasm32-wasip1/release/tollgate.wasm target/oci
    make oci

The layout (https://github.com/opencontainers/image-spec/blob/main/image-layout.md) holds two
manifests, named in index.json by `org.opencontainers.image.ref.name`:

- `compat`: an ordinary image with one gzip'd tar layer holding `plugin.wasm`: the "compat"
  variant of the Wasm image spec, which every registry stores and both Istio's and Envoy
  Gateway's image fetchers read (their `extractOCIStandardImage`).
- `artifact`: the Wasm OCI artifact those fetchers also read (`extractOCIArtifactImage`): exactly
  two layers, a runtime config (`application/vnd.module.wasm.config.v1+json`) and the module
  itself, uncompressed (`application/vnd.module.wasm.content.layer.v1+wasm`), so the layer's
  digest is the module's sha256. (The newer CNCF "wasm32-wasi artifact" types,
  `application/vnd.wasm.config.v0+json` with an `application/wasm` layer, are not read by either.)

The same module gives the same bytes and digests on every run: no timestamps (tar mtime 0, gzip
mtime 0 and no file name), owner 0:0, fixed modes, one tar format, JSON with sorted keys. No
Docker engine or image builder is needed; push with any registry client, for example
`skopeo copy oci:target/oci:compat docker://registry.example.com/tollgate:0.1.0`.

Prints the digests and, given `--image`, how to push and pin the image; `--json` prints one line
per image instead: {"ref", "digest", "layer", "wasm_sha256"}.
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
WASM_CONFIG = "application/vnd.module.wasm.config.v1+json"
WASM_LAYER = "application/vnd.module.wasm.content.layer.v1+wasm"
# The file name both fetchers look for in a compat layer.
PLUGIN_FILE = "plugin.wasm"
# The proxy-wasm root id the module registers (any; Tollgate's root context ignores it).
ROOT_IDS = ["tollgate"]
# Istio resolves an image index to its linux/amd64 entry; a plain manifest says the same.
PLATFORM = {"architecture": "amd64", "os": "linux"}


def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Layout:
    """An OCI image layout being written: blobs by digest, then index.json."""

    def __init__(self, out: str):
        self.out = out
        if os.path.exists(out):
            shutil.rmtree(out)
        os.makedirs(os.path.join(out, "blobs", "sha256"))
        self.manifests = []

    def blob(self, media_type: str, data: bytes, annotations=None) -> dict:
        digest = sha256(data)
        with open(os.path.join(self.out, "blobs", "sha256", digest), "wb") as f:
            f.write(data)
        desc = {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}
        if annotations:
            desc["annotations"] = annotations
        return desc

    def manifest(self, ref: str, config: dict, layers: list) -> dict:
        body = canonical({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers})
        desc = self.blob(OCI_MANIFEST, body, {"org.opencontainers.image.ref.name": ref})
        self.manifests.append(desc)
        return desc

    def finish(self):
        with open(os.path.join(self.out, "oci-layout"), "wb") as f:
            f.write(canonical({"imageLayoutVersion": "1.0.0"}))
        with open(os.path.join(self.out, "index.json"), "wb") as f:
            f.write(canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.manifests}))


def plugin_tar(module: bytes) -> bytes:
    """A tar holding only plugin.wasm, the same bytes for the same module."""
    buf = io.BytesIO()
    # USTAR: no PAX headers, whose content could depend on the Python version.
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(PLUGIN_FILE)
        info.size = len(module)
        info.mtime = 0
        info.mode = 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(module))
    return buf.getvalue()


def gzipped(data: bytes) -> bytes:
    buf = io.BytesIO()
    # mtime=0 and no file name: the gzip header carries nothing that changes between runs.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(data)
    return buf.getvalue()


def compat_image(layout: Layout, module: bytes, ref: str) -> dict:
    tar = plugin_tar(module)
    layer = layout.blob(OCI_LAYER_GZIP, gzipped(tar))
    config = layout.blob(OCI_CONFIG, canonical({
        **PLATFORM,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{sha256(tar)}"]},
    }))
    return {"ref": ref, "manifest": layout.manifest(ref, config, [layer]), "layer": layer}


def artifact_image(layout: Layout, module: bytes, ref: str) -> dict:
    runtime = canonical({"type": "envoy_proxy", "config": {"root_ids": ROOT_IDS}})
    config = layout.blob(WASM_CONFIG, runtime)
    runtime_layer = layout.blob(WASM_CONFIG, runtime, {"org.opencontainers.image.title": "runtime-config.json"})
    layer = layout.blob(WASM_LAYER, module, {"org.opencontainers.image.title": PLUGIN_FILE})
    return {"ref": ref, "manifest": layout.manifest(ref, config, [runtime_layer, layer]), "layer": layer}


def build(module_path: str, out: str) -> list:
    with open(module_path, "rb") as f:
        module = f.read()
    if not module.startswith(b"\0asm"):
        raise SystemExit(f"{module_path} is not a WebAssembly module")
    layout = Layout(out)
    images = [compat_image(layout, module, "compat"), artifact_image(layout, module, "artifact")]
    layout.finish()
    return [{"ref": i["ref"], "digest": i["manifest"]["digest"], "layer": i["layer"]["digest"],
             "wasm_sha256": sha256(module)} for i in images]


def summary(images: list, out: str, image: str) -> str:
    lines = [f"{i['ref']:9} {i['digest']}  layer {i['layer']}" for i in images]
    lines.append(f"module    sha256:{images[0]['wasm_sha256']}")
    if image:
        repository = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
        compat = next(i["digest"] for i in images if i["ref"] == "compat")
        lines += [
            "",
            "Push with skopeo (Debian package `skopeo`; crane and oras copy an OCI layout the same way):",
            f"  skopeo copy oci:{out}:compat docker://{image}",
            f"  skopeo copy oci:{out}:artifact docker://{image}-artifact   # optional: the Wasm artifact form",
            "",
            "Pin the pushed digest:",
            f"  envoy/istio/wasmplugin.yaml                 url: oci://{repository}@{compat}",
            f"  envoy/envoy-gateway/extensionpolicy.yaml    url: {repository}@{compat}",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("module", help="the built module (tollgate.wasm)")
    p.add_argument("out", help="directory for the OCI image layout (replaced)")
    p.add_argument("--image", default="", help="where it will be pushed (registry/repository:tag), for the hints")
    p.add_argument("--json", action="store_true", help="one JSON line per image, nothing else")
    a = p.parse_args()
    images = build(a.module, a.out)
    if a.json:
        for image in images:
            print(json.dumps(image))
    else:
        print(summary(images, a.out, a.image))
