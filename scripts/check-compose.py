#!/usr/bin/env python3
"""Static checks of compose.yaml and the Dockerfile (no Docker engine runs in CI).

Checks that the file parses, every service has an image or a build, every
depends_on names a service (with a healthcheck when the condition is
service_healthy), the environment our binaries get is variables they know
(compared with their --help output when the binaries are built), and that
the Dockerfile builds and copies both binaries.
"""
import os
import re
import subprocess
import sys

try:
    import yaml
except ImportError:
    sys.exit("check-compose: PyYAML is missing (pip install pyyaml)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
errors = []


def fail(message):
    errors.append(message)


with open(os.path.join(ROOT, "compose.yaml")) as f:
    compose = yaml.safe_load(f)

services = compose.get("services") or {}
for name in ["postgres", "rabbitmq", "api", "worker"]:
    if name not in services:
        fail(f"service {name} is missing")

for name, service in services.items():
    if not ("image" in service or "build" in service):
        fail(f"{name}: needs an image or a build")
    depends = service.get("depends_on") or {}
    if isinstance(depends, list):
        depends = {d: {} for d in depends}
    for dep, rule in depends.items():
        if dep not in services:
            fail(f"{name}: depends on unknown service {dep}")
        elif (rule or {}).get("condition") == "service_healthy" and "healthcheck" not in services[dep]:
            fail(f"{name}: waits for {dep} to be healthy, but {dep} has no healthcheck")
    for port in service.get("ports") or []:
        if not re.fullmatch(r"\d+:\d+", str(port)):
            fail(f"{name}: port {port!r} is not HOST:CONTAINER")

for name in ["postgres", "rabbitmq", "api"]:
    if name in services and "healthcheck" not in services[name]:
        fail(f"{name}: no healthcheck")
if (services.get("worker", {}).get("deploy") or {}).get("replicas", 1) < 2:
    fail("worker: run at least two replicas")
if (services.get("api", {}).get("deploy") or {}).get("replicas", 1) < 2:
    fail("api: run at least two replicas (behind the proxy)")
for name in ["api", "worker"]:
    if (services.get(name) or {}).get("ports"):
        fail(f"{name}: replicas cannot share a host port; publish through the proxy")

# The proxy in front of the API replicas: nginx with the WebSocket upgrade.
proxy = services.get("proxy")
if proxy is None:
    fail("service proxy is missing")
else:
    mounts = [str(v).split(":")[0] for v in proxy.get("volumes") or []]
    conf_path = next((m for m in mounts if m.endswith(".conf")), None)
    if conf_path is None:
        fail("proxy: mount its nginx configuration")
    else:
        path = os.path.join(ROOT, conf_path)
        if not os.path.exists(path):
            fail(f"proxy: {conf_path} does not exist")
        else:
            with open(path) as f:
                conf = f.read()
            for needle in ["proxy_set_header Upgrade $http_upgrade", "proxy_http_version 1.1", "location /ws", "server api:8080"]:
                if needle not in conf:
                    fail(f"proxy: {conf_path} lacks `{needle}`")
for name, service in services.items():
    for volume in service.get("volumes") or []:
        source = str(volume).split(":")[0]
        if source.startswith("./") and not os.path.exists(os.path.join(ROOT, source)):
            fail(f"{name}: mounts {source}, which does not exist")

if not str((services.get("rabbitmq") or {}).get("image", "")).endswith("management"):
    fail("rabbitmq: use a -management image so the UI is on 15672")


def known_variables(binary):
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    for profile in ["debug", "release"]:
        path = os.path.join(target, profile, binary)
        if os.path.exists(path):
            out = subprocess.run([path, "--help"], capture_output=True, text=True).stdout
            return set(re.findall(r"env: ([A-Z0-9_]+)=", out))
    return None


for service, binary in [("api", "courier-api"), ("worker", "courier-worker")]:
    known = known_variables(binary)
    env = (services.get(service) or {}).get("environment") or {}
    if known is None:
        continue  # not built yet; the next run checks
    for variable in env:
        if variable != "RUST_LOG" and variable not in known:
            fail(f"{service}: sets {variable}, which {binary} does not read")

with open(os.path.join(ROOT, "Dockerfile")) as f:
    dockerfile = f.read()
if len(re.findall(r"^FROM ", dockerfile, re.M)) < 2:
    fail("Dockerfile: expected a multi-stage build")
for binary in ["courier-api", "courier-worker"]:
    if dockerfile.count(binary) < 2:
        fail(f"Dockerfile: does not build and copy {binary}")

if errors:
    print("compose.yaml / Dockerfile problems:", *errors, sep="\n  ")
    sys.exit(1)
print("compose.yaml and Dockerfile: ok")
