#!/usr/bin/env python3
"""Checks the container, Compose and Kubernetes files without a container engine or a cluster.

- docker-compose.yml against the Compose specification schema (check-jsonschema's vendored copy);
- every `depends_on` names a service; every ${VARIABLE} it reads is documented in .env.example;
  every variable it sets on our services is one the code reads;
- k8s/ rendered with kustomize and each resource validated strictly against the Kubernetes
  schemas (kubernetes-validate); the RabbitmqCluster against our partial schema of it;
- every command the image, Compose and the Deployments run is a binary of the workspace;
- the Prometheus config and alert rules load (`promtool`), the rules' tests pass, and the rules
  and the Grafana dashboard read only metrics the services export;
- the Dockerfile's dependency layer is cooked for the packages its final build builds.
"""

import json
import pathlib
import re
import subprocess
import sys
import tempfile

import jsonschema
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
failures = []


def fail(message):
    failures.append(message)
    print(f"FAIL {message}")


def run(*command, **kwargs):
    return subprocess.run(command, cwd=ROOT, check=True, text=True, capture_output=True, **kwargs)


# Compose: the specification's schema.
try:
    run("check-jsonschema", "--builtin-schema", "vendor.compose-spec", "docker-compose.yml")
    print("ok   docker-compose.yml matches the Compose specification")
except subprocess.CalledProcessError as e:
    fail(f"docker-compose.yml against the Compose specification:\n{e.stdout}{e.stderr}")

compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
services = compose["services"]
for name, service in services.items():
    for dependency in service.get("depends_on", {}) or {}:
        if dependency not in services:
            fail(f"service {name} depends on {dependency}, which does not exist")

documented = {
    line.split("=", 1)[0]
    for line in (ROOT / ".env.example").read_text().splitlines()
    if "=" in line and not line.startswith("#")
}
for variable in sorted(set(re.findall(r"\$\{([A-Z0-9_]+)", (ROOT / "docker-compose.yml").read_text()))):
    if variable not in documented:
        fail(f"docker-compose.yml reads ${{{variable}}}, which .env.example does not document")

source = "\n".join(p.read_text() for p in ROOT.glob("*/src/**/*.rs"))
read_by_code = set(re.findall(r'"([A-Z][A-Z0-9_]+)"', source))
# The object store's client reads every AWS_* variable itself (object_store's from_env).
aws_settings = {"AWS_ENDPOINT_URL", "AWS_ALLOW_HTTP", "AWS_REGION", "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY"}
ours = [s for s in services.values() if s.get("image", "").startswith("product-event-pipeline")]
for service in ours:
    for variable in service.get("environment", {}):
        if variable not in read_by_code | aws_settings:
            fail(f"docker-compose.yml sets {variable}, which no service reads")
print(f"ok   compose: {len(services)} services, depends_on and variables consistent")

# Kubernetes: render, then validate each resource.
rendered = run("kubectl", "kustomize", "k8s").stdout
documents = [d for d in yaml.safe_load_all(rendered) if d]
custom_schema = json.loads((ROOT / "deploy/rabbitmqcluster.schema.json").read_text())
with tempfile.TemporaryDirectory() as scratch:
    for index, document in enumerate(documents):
        kind, name = document["kind"], document["metadata"]["name"]
        if kind == "RabbitmqCluster":
            try:
                jsonschema.validate(document, custom_schema)
                print(f"ok   {kind}/{name} (our partial schema of the operator's CRD)")
            except jsonschema.ValidationError as e:
                fail(f"{kind}/{name}: {e.message}")
            continue
        path = pathlib.Path(scratch) / f"{index}.yaml"
        path.write_text(yaml.safe_dump(document))
        result = subprocess.run(
            ["kubernetes-validate", "--strict", "--quiet", str(path)], text=True, capture_output=True
        )
        if result.returncode != 0 or "Couldn't find schema" in result.stdout + result.stderr:
            fail(f"{kind}/{name}:\n{result.stdout}{result.stderr}")
print(f"ok   k8s: {len(documents)} resources rendered and validated")

# The one-off Job that makes the first API key, applied by hand (not in the kustomization).
first_key = subprocess.run(
    ["kubernetes-validate", "--strict", "--quiet", str(ROOT / "k8s/first-key.yaml")],
    text=True,
    capture_output=True,
)
if first_key.returncode != 0:
    fail(f"k8s/first-key.yaml:\n{first_key.stdout}{first_key.stderr}")
else:
    print("ok   k8s/first-key.yaml validated")

# Entry points: every command is a binary of the workspace.
metadata = json.loads(run("cargo", "metadata", "--no-deps", "--format-version", "1").stdout)
binaries = {t["name"] for p in metadata["packages"] for t in p["targets"] if "bin" in t["kind"]}
commands = set(re.findall(r'CMD \["([a-z-]+)"\]', (ROOT / "Dockerfile").read_text()))
commands |= {s["command"][0] for s in ours if s.get("command")}
commands |= {
    c["args"][0]
    for d in documents
    if d["kind"] == "Deployment"
    for c in d["spec"]["template"]["spec"]["containers"]
    if c.get("args")
}
copied = set(re.findall(r"target/release/([a-z-]+)", (ROOT / "Dockerfile").read_text()))
for command in sorted(commands):
    if command not in binaries:
        fail(f"{command} is run but is not a binary of the workspace")
    if command not in copied:
        fail(f"{command} is run but the Dockerfile does not copy it into the image")
print(f"ok   entry points {sorted(commands)} are workspace binaries in the image")

# Prometheus: the alert rules and the config load, and the rules' own tests pass.
for command in (
    ["promtool", "check", "config", "deploy/prometheus/prometheus.yml"],
    ["promtool", "test", "rules", "deploy/prometheus/alerts_test.yml"],
):
    try:
        run(*command)
        print(f"ok   {' '.join(command)}")
    except FileNotFoundError:
        fail("promtool is needed (Debian: apt-get install prometheus)")
        break
    except subprocess.CalledProcessError as e:
        fail(f"{' '.join(command)}:\n{e.stdout}{e.stderr}")

# Every metric the alert rules and the Grafana dashboard read is one the services export.
declared = set(re.findall(r'"(pipeline_[a-z_]+)"', (ROOT / "shared/src/metric.rs").read_text()))
for path in ("deploy/prometheus/alerts.yml", "deploy/grafana/dashboards/pipeline.json"):
    for name in sorted(set(re.findall(r"pipeline_[a-z_]+", (ROOT / path).read_text()))):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if base not in declared and name not in declared:
            fail(f"{path} reads {name}, which no service exports (shared/src/metric.rs)")
json.loads((ROOT / "deploy/grafana/dashboards/pipeline.json").read_text())
print("ok   the alert rules and the Grafana dashboard read only exported metrics")

# The dependency layer is cooked for the packages the final build builds, or it is rebuilt.
dockerfile = (ROOT / "Dockerfile").read_text()
cook = re.search(r"cargo chef cook([^\n]*)", dockerfile)
build = re.search(r"RUN cargo build([^\n]*)", dockerfile)
packages = lambda line: sorted(re.findall(r"(?:-p|--package)[ =]([a-z-]+)", line))
if not cook or not build:
    fail("the Dockerfile has no cargo chef cook or no cargo build")
elif packages(cook.group(1)) != packages(build.group(1)):
    fail(f"cargo chef cook builds {packages(cook.group(1)) or 'the workspace'}, the final build "
         f"{packages(build.group(1)) or 'the workspace'}: the dependency layer would be rebuilt")
else:
    print("ok   the Dockerfile's dependency layer is cooked for the packages it builds")

sys.exit(1 if failures else 0)
