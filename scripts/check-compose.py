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
