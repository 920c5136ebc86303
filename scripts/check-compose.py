#!/usr/bin/env python3
"""Static checks of compose.yaml and the Dockerfile (no Docker engine runs in CI).

Checks that the file parses, every service has an image or a build, every
depends_on names a service (with a healthcheck when the condition is
service_healthy), the environment our binaries get is variables they know
(compared with their --help output when the binaries are built), and that
the Dockerfile builds and copies both binaries.

And what makes compose fit for real use, so it cannot silently regress:
PostgreSQL's and RabbitMQ's data in declared named volumes (and a fixed
RabbitMQ host name, which names its data directory), a restart policy on every
service, host ports bound to 127.0.0.1 and clear of a locally installed
PostgreSQL / RabbitMQ (5432, 5672, 15672), JWT_SECRET required rather than
defaulted, every `$` a valid compose interpolation, the worker's metrics port
the same in compose, its healthcheck and deploy/prometheus.yml, and a
Dockerfile that builds with BuildKit cache mounts.
"""
import os
import re
import subprocess
import sys

try:
    import yaml
except ImportError:
    sys.exit(
        f"check-compose: the Python package PyYAML is missing for {sys.executable}: "
        "`python3 -m pip install pyyaml` or `apt-get install python3-yaml` (./scripts/test installs it)"
    )

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
errors = []


def fail(message):
    errors.append(message)


with open(os.path.join(ROOT, "compose.yaml")) as f:
    compose = yaml.safe_load(f)

services = compose.get("services") or {}
# Host ports of a PostgreSQL or RabbitMQ installed on the host, which compose must not take.
LOCAL_SERVICE_PORTS = {5432: "PostgreSQL", 5672: "RabbitMQ", 15672: "RabbitMQ management UI"}
host_ports = {}
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
        match = re.fullmatch(r"(?:([0-9.]+):)?(\d+):(\d+)(?:/(?:tcp|udp))?", str(port))
        if not match:
            fail(f"{name}: port {port!r} is not IP:HOST:CONTAINER")
            continue
        ip, host_port = match.group(1), int(match.group(2))
        if ip != "127.0.0.1":
            fail(f"{name}: port {port!r} is published beyond this host; bind it to 127.0.0.1 (127.0.0.1:{host_port}:{match.group(3)})")
        if host_port in LOCAL_SERVICE_PORTS:
            fail(f"{name}: host port {host_port} collides with a locally installed {LOCAL_SERVICE_PORTS[host_port]}; use another")
        if host_port in host_ports:
            fail(f"{name}: host port {host_port} is also published by {host_ports[host_port]}")
        host_ports[host_port] = name
    if service.get("restart") not in ("unless-stopped", "always"):
        fail(f"{name}: set `restart: unless-stopped` (it has {service.get('restart')!r})")

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

# Data survives `docker compose down` (and a recreated container): named volumes.
declared_volumes = set((compose.get("volumes") or {}).keys())
used_volumes = set()
for name, service in services.items():
    for volume in service.get("volumes") or []:
        source = volume.get("source", "") if isinstance(volume, dict) else str(volume).split(":")[0]
        if source and not source.startswith(("/", ".", "~", "$")):
            used_volumes.add(source)
            if source not in declared_volumes:
                fail(f"{name}: uses volume {source}, which the top-level `volumes:` does not declare")
for volume in sorted(declared_volumes - used_volumes):
    fail(f"volume {volume} is declared but no service uses it")
for name, data_dir in [("postgres", "/var/lib/postgresql/data"), ("rabbitmq", "/var/lib/rabbitmq")]:
    mounts = {}
    for volume in (services.get(name) or {}).get("volumes") or []:
        if isinstance(volume, dict):
            mounts[volume.get("target")] = volume.get("source", "")
        else:
            parts = str(volume).split(":")
            if len(parts) >= 2:
                mounts[parts[1]] = parts[0]
    if mounts.get(data_dir) not in declared_volumes:
        fail(f"{name}: keep {data_dir} in a named volume, or `docker compose down` loses it")
if not (services.get("rabbitmq") or {}).get("hostname"):
    fail("rabbitmq: set a fixed `hostname:`; RabbitMQ keys its data directory by node name (rabbit@HOSTNAME)")

# Compose interpolates every `$` of every value (even in services not started):
# `$$`, `$NAME` and `${NAME...}` are valid; anything else fails the whole file
# in some compose versions ("invalid interpolation format"), and the text after
# `:?`, `:-`... is interpolated too. `$$` is a literal `$` in all of them.
INTERPOLATION_OPERATORS = (":?", "?", ":-", "-", ":+", "+")


def interpolation_errors(text):
    problems = []
    i = 0
    while i < len(text):
        if text[i] != "$":
            i += 1
            continue
        rest = text[i + 1:]
        if rest.startswith("$"):
            i += 2
        elif re.match(r"[_A-Za-z]", rest):
            i += 1 + re.match(r"[_A-Za-z][_A-Za-z0-9]*", rest).end()
        elif rest.startswith("{"):
            depth, j = 0, i
            while j < len(text):
                if text.startswith("${", j):
                    depth += 1
                    j += 2
                    continue
                if text[j] == "}":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            if j >= len(text):
                return problems + [f"unclosed ${{ in {text!r}"]
            inner = text[i + 2:j]
            match = re.match(r"[_A-Za-z][_A-Za-z0-9]*", inner)
            if not match:
                problems.append(f"invalid ${{{inner}}}")
            else:
                operand = inner[match.end():]
                if operand:
                    operator = next((o for o in INTERPOLATION_OPERATORS if operand.startswith(o)), None)
                    if operator is None:
                        problems.append(f"invalid ${{{inner}}}")
                    else:
                        problems += interpolation_errors(operand[len(operator):])
            i = j + 1
        else:
            problems.append(f"`${rest[:1]}` in {text!r} (write $$ for a literal $)")
            i += 1
    return problems


def strings_in(value, path):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from strings_in(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from strings_in(item, f"{path}[{index}]")
    elif isinstance(value, str):
        yield path, value


for path, text in strings_in(compose, ""):
    for problem in interpolation_errors(text):
        fail(f"{path.lstrip('.')}: invalid interpolation: {problem}")

# JWT_SECRET: required, never a default secret everyone knows.
jwt = str(((services.get("api") or {}).get("environment") or {}).get("JWT_SECRET", ""))
if not re.fullmatch(r"\$\{JWT_SECRET:\?.+\}", jwt):
    fail(f"api: JWT_SECRET must be required (${{JWT_SECRET:?how to set it}}), not {jwt!r}")


def port_of(address):
    match = re.search(r":(\d+)$", str(address))
    return int(match.group(1)) if match else None


# The worker's metrics port: its METRICS_ADDR, its healthcheck and Prometheus's scrape config agree.
worker = services.get("worker") or {}
metrics_port = port_of((worker.get("environment") or {}).get("METRICS_ADDR", ""))
if metrics_port is None:
    fail("worker: set METRICS_ADDR (0.0.0.0:PORT) so its healthcheck and Prometheus can reach it")
else:
    health = " ".join(map(str, (worker.get("healthcheck") or {}).get("test") or []))
    if f":{metrics_port}/" not in health:
        fail(f"worker: its healthcheck does not use METRICS_ADDR's port {metrics_port}: {health!r}")
    prometheus_path = os.path.join(ROOT, "deploy", "prometheus.yml")
    if os.path.exists(prometheus_path):
        with open(prometheus_path) as f:
            scrape = yaml.safe_load(f) or {}
        for job in scrape.get("scrape_configs") or []:
            for sd in job.get("dns_sd_configs") or []:
                if "worker" in (sd.get("names") or []) and sd.get("port") != metrics_port:
                    fail(f"deploy/prometheus.yml: scrapes workers on {sd.get('port')}, not METRICS_ADDR's {metrics_port}")
api_port = port_of(((services.get("api") or {}).get("environment") or {}).get("API_ADDR", ""))
api_health = " ".join(map(str, ((services.get("api") or {}).get("healthcheck") or {}).get("test") or []))
if api_port is not None and f":{api_port}/" not in api_health:
    fail(f"api: its healthcheck does not use API_ADDR's port {api_port}")


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
        # Not built yet; the next run checks.
        print(f"check-compose: {binary} is not built: its environment in compose.yaml is not compared with --help")
        continue
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
# BuildKit cache mounts, so an edit does not rebuild every dependency; the
# binaries must be copied out of the target cache (a mount is not in the image).
if not dockerfile.startswith("# syntax=docker/dockerfile:1"):
    fail("Dockerfile: start with `# syntax=docker/dockerfile:1` (RUN --mount needs it)")
build_runs = [run for run in re.findall(r"^RUN\s((?:.*\\\n)*.*)", dockerfile, re.M) if "cargo build" in run]
if not build_runs:
    fail("Dockerfile: no RUN with cargo build")
for run in build_runs:
    mounts = re.findall(r"--mount=type=cache,(?:[^\s]*,)?target=([^\s,]+)", run)
    if not any(m.endswith("/cargo/registry") for m in mounts):
        fail("Dockerfile: cargo build without a cache mount of the cargo registry (--mount=type=cache,target=/usr/local/cargo/registry)")
    if not any(m.endswith("target") for m in mounts):
        fail("Dockerfile: cargo build without a cache mount of the target directory (--mount=type=cache,target=/src/target)")
    after_build = run.split("cargo build", 1)[1]
    for binary in ["courier-api", "courier-worker"]:
        if not re.search(rf"\bcp\b[^&;]*target/release/{binary}\b", after_build):
            fail(f"Dockerfile: copy {binary} out of the target cache mount in the same RUN as cargo build")
dockerignore_path = os.path.join(ROOT, ".dockerignore")
ignored = open(dockerignore_path).read().split() if os.path.exists(dockerignore_path) else []
for entry in ["target", ".git"]:
    if entry not in ignored:
        fail(f".dockerignore: add {entry}, or every build sends it to the builder")

if errors:
    print("compose.yaml / Dockerfile problems:", *errors, sep="\n  ")
    sys.exit(1)
print("compose.yaml and Dockerfile: ok")
