"""`make oci`'s image layout (envoy/tools/oci_image.py) through a real registry and a real client.

The layout is built twice and must come out byte for byte the same. Both of its images are pushed
with skopeo to Debian's `docker-registry` (the CNCF distribution registry) on a loopback port,
pulled back, and read the way Istio's and Envoy Gateway's image fetchers read them
(`pkg/wasm/imagefetcher.go`, `internal/wasm/imagefetcher.go`): the manifest the registry serves
must be the one index.json pins, and the module that comes out must be the built module. A real
Envoy then loads the artifact's layer straight from the registry over HTTP, checked against its
digest (the module's sha256, which an HTTP `sha256:` pin names)."""
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request

import pytest
import yaml

from harness import ROOT, TEMPLATE, WASM, Envoy, free_port, render

sys.path.insert(0, os.path.join(ROOT, "envoy", "tools"))
import oci_image  # noqa: E402

REPOSITORY = "tollgate"


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def module():
    with open(WASM, "rb") as f:
        return f.read()


def layout_files(root):
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def index(layout):
    with open(os.path.join(layout, "index.json")) as f:
        return {m["annotations"]["org.opencontainers.image.ref.name"]: m for m in json.load(f)["manifests"]}


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("oci") / "layout")
    images = oci_image.build(WASM, out)
    return {"dir": out, "images": {i["ref"]: i for i in images}}


class Registry:
    """Debian's docker-registry on a free loopback port: plain HTTP, no auth, storage in `dir`."""

    def __init__(self, dir):
        binary = shutil.which("docker-registry")
        assert binary, "docker-registry is missing: `make debian-test-services` installs it"
        self.port = free_port()
        config = os.path.join(dir, "config.yml")
        with open(config, "w") as f:
            yaml.safe_dump({
                "version": 0.1,
                "log": {"level": "warn"},
                "storage": {"filesystem": {"rootdirectory": os.path.join(dir, "storage")}},
                "http": {"addr": f"127.0.0.1:{self.port}"},
            }, f)
        self.log = open(os.path.join(dir, "registry.log"), "w")
        self.proc = subprocess.Popen([binary, "serve", config], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v2/", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert self.proc.poll() is None and time.time() < deadline, "docker-registry did not start"
            time.sleep(0.1)

    def ref(self, tag):
        return f"docker://127.0.0.1:{self.port}/{REPOSITORY}:{tag}"

    def blob(self, digest):
        url = f"http://127.0.0.1:{self.port}/v2/{REPOSITORY}/blobs/{digest}"
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.read()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    r = Registry(str(tmp_path_factory.mktemp("registry")))
    yield r
    r.stop()


def skopeo(*args):
    binary = shutil.which("skopeo")
    assert binary, "skopeo is missing: `make debian-test-services` installs it"
    out = subprocess.run([binary, *args], capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()[-3000:]
    return out.stdout


@pytest.fixture(scope="module")
def pushed(layout, registry):
    """Both images pushed as tags `compat` and `artifact`: {ref: raw manifest as the registry serves it}."""
    out = {}
    for ref in ("compat", "artifact"):
        skopeo("copy", "--dest-tls-verify=false", f"oci:{layout['dir']}:{ref}", registry.ref(ref))
        out[ref] = skopeo("inspect", "--raw", "--tls-verify=false", registry.ref(ref))
    return out


def test_make_oci_runs_this_script():
    with open(os.path.join(ROOT, "Makefile")) as f:
        recipe = re.search(r"^oci:.*\n((?:\t.*\n)+)", f.read(), re.M).group(1)
    assert "envoy/tools/oci_image.py $(WASM) $(OCI_DIR)" in recipe
    assert re.search(r"^oci: build\b", open(os.path.join(ROOT, "Makefile")).read(), re.M)


def test_same_module_same_layout(layout, tmp_path):
    again = oci_image.build(WASM, str(tmp_path / "again"))
    assert {i["ref"]: i for i in again} == layout["images"]
    assert layout_files(str(tmp_path / "again")) == layout_files(layout["dir"])


def test_layout_digests(layout):
    files = layout_files(layout["dir"])
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    # Every blob is stored under its own digest.
    for name, data in files.items():
        if name.startswith("blobs/sha256/"):
            assert sha256(data) == os.path.basename(name), name
    wasm = sha256(module())
    assert layout["images"]["artifact"]["layer"] == f"sha256:{wasm}"
    for ref, entry in index(layout["dir"]).items():
        assert entry["digest"] == layout["images"][ref]["digest"]
        assert entry["mediaType"] == oci_image.OCI_MANIFEST


def istio_extract(manifest, blob):
    """The module, found as Istio's and Envoy Gateway's fetchers find it in an OCI manifest: the last
    layer as a compat tar+gzip holding plugin.wasm, else the layer of the Wasm artifact type in a
    manifest of exactly two layers."""
    layers = manifest["layers"]
    assert layers, "no layers"
    last = layers[-1]
    if last["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip":
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob(last["digest"])))) as tar:
            for member in tar:
                if os.path.basename(member.name) == "plugin.wasm":
                    return tar.extractfile(member).read()
        raise AssertionError("plugin.wasm not in the layer")
    assert len(layers) == 2, f"an artifact has two layers, not {len(layers)}"
    [layer] = [l for l in layers if l["mediaType"] == "application/vnd.module.wasm.content.layer.v1+wasm"]
    return blob(layer["digest"])


@pytest.mark.parametrize("ref", ["compat", "artifact"])
def test_pushed_image_pulls_back_as_the_module(ref, layout, registry, pushed, tmp_path):
    raw = pushed[ref]
    # The registry serves the manifest that index.json pins, byte for byte.
    assert f"sha256:{sha256(raw)}" == index(layout["dir"])[ref]["digest"] == layout["images"][ref]["digest"]
    manifest = json.loads(raw)
    if ref == "compat":
        assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
        assert [l["mediaType"] for l in manifest["layers"]] == ["application/vnd.oci.image.layer.v1.tar+gzip"]
    else:
        assert manifest["config"]["mediaType"] == "application/vnd.module.wasm.config.v1+json"
        assert manifest["layers"][-1]["digest"] == f"sha256:{sha256(module())}"
    # What the fetchers read out of the registry is the built module.
    assert istio_extract(manifest, registry.blob) == module()
    # And a pull with skopeo into a fresh layout gives the same manifest and blobs.
    back = str(tmp_path / "back")
    skopeo("copy", "--src-tls-verify=false", registry.ref(ref), f"oci:{back}:{ref}")
    assert index(back)[ref]["digest"] == layout["images"][ref]["digest"]
    pulled = layout_files(back)
    for layer in manifest["layers"]:
        name = "blobs/sha256/" + layer["digest"].split(":")[1]
        assert sha256(pulled[name]) == layer["digest"].split(":")[1]
    assert istio_extract(manifest, lambda d: pulled["blobs/sha256/" + d.split(":")[1]]) == module()


def test_envoy_loads_the_artifact_layer_from_the_registry(layout, registry, pushed, upstream):
    """Envoy's own remote data source fetches the module from the registry's blob URL and checks it
    against the layer digest: the HTTP form of envoy/istio/envoyfilter.yaml and Envoy Gateway's
    `code.type: HTTP`, served by the registry the image was pushed to."""
    layer = layout["images"]["artifact"]["layer"]

    def bootstrap(e):
        text = render.render(open(TEMPLATE).read(), "{}", "string", {
            "LISTEN_PORT": e.port, "ADMIN_PORT": e.admin, "UPSTREAM_PORT": upstream.port, "WASM": WASM})
        config = yaml.safe_load(text)
        hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        [entry] = [f for f in hcm["http_filters"] if f["name"] == "tollgate"]
        entry["typed_config"]["config"]["vm_config"]["code"] = {"remote": {
            "http_uri": {"uri": f"http://127.0.0.1:{registry.port}/v2/{REPOSITORY}/blobs/{layer}",
                         "cluster": "oci_registry", "timeout": "10s"},
            "sha256": layer.split(":")[1],
        }}
        entry["typed_config"]["config"]["configuration"]["value"] = json.dumps(
            {"routes": [{"name": "health", "path": "/health", "methods": ["GET"], "public": True}]})
        config["static_resources"]["clusters"].append({
            "name": "oci_registry", "connect_timeout": "1s", "type": "STATIC",
            "load_assignment": {"cluster_name": "oci_registry", "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": registry.port}}}}]}]},
        })
        return config

    envoy = Envoy.from_bootstrap(bootstrap, upstream.port)
    try:
        envoy.wait_ready(120)
        assert envoy.get("/health").status == 200
        assert envoy.get("/api/orders").status == 404
        assert "tollgate: policy loaded" in envoy.logs()
    finally:
        envoy.stop()
