#!/usr/bin/env python3
"""Checks the container, Compose and Kubernetes files without a container engine or a cluster.

- docker-compose.yml against the Compose specification schema (check-jsonschema's vendored copy);
- every `depends_on` names a service; every ${VARIABLE} it reads is documented in .env.example;
  every variable it sets on our services is one the code reads;
- every k8s/ overlay rendered with kustomize (alone and with the monitoring component, from a copy
  whose git-ignored secrets.env scripts/init-env.sh makes), each resource validated strictly
  against the Kubernetes schemas (kubernetes-validate, oldest supported and newest version) and
  the custom resources against deploy/schemas; every pod against Pod Security "restricted"; no
  `replicas` where an HPA scales; probes, preStop pause and grace period; secrets only from
  git-ignored files, FIRST_API_KEY only in the Job, whose spec does not change with them; no
  namespace but the overlay's; the network flows the architecture needs open, the others closed;
- every command the image, Compose and the workloads run is a binary of the workspace;
- the Prometheus config and alert rules load (`promtool`), the rules' tests pass, every rule's
  `annotations.runbook_url` names a section of docs/runbooks.md, and the rules and the Grafana
  dashboard read only metrics the services export;
- the Dockerfile's dependency layer is cooked for the packages its final build builds.
"""

import ipaddress
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse

import jsonschema
import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
failures = []


def fail(message):
    failures.append(message)
    print(f"FAIL {message}")


def run(*command, **kwargs):
    return subprocess.run(command, cwd=ROOT, check=True, text=True, capture_output=True, **kwargs)


# The monitoring component's copies of files in deploy/ (`check.py --sync` refreshes them).
MONITORING_FILES = {
    "k8s/components/monitoring/dashboards/pipeline.json": "deploy/grafana/dashboards/pipeline.json",
}
PROMETHEUS_RULE = "k8s/components/monitoring/prometheus-rule.yaml"


def prometheus_rule_text():
    """The PrometheusRule the monitoring component carries: deploy/prometheus/alerts.yml's groups."""
    groups = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())["groups"]
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "pipeline"},
        "spec": {"groups": groups},
    }
    return (
        "# Made from deploy/prometheus/alerts.yml by `python3 deploy/check.py --sync`: edit that\n"
        "# file, then run it (CI fails while this copy differs).\n"
        + yaml.safe_dump(rule, sort_keys=False, width=100, allow_unicode=True)
    )


if sys.argv[1:] == ["--sync"]:
    # Refreshes the monitoring component's copies of deploy/prometheus and deploy/grafana files.
    (ROOT / "k8s/components/monitoring/prometheus-rule.yaml").write_text(prometheus_rule_text())
    for copy, source in MONITORING_FILES.items():
        shutil.copyfile(ROOT / source, ROOT / copy)
    print("synced k8s/components/monitoring from deploy/")
    sys.exit(0)


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
# The compose test's override swaps in the locally built image for every service that runs ours.
test_services = yaml.safe_load((ROOT / "deploy/compose-test/compose.test.yml").read_text())["services"]
for name, service in services.items():
    if service.get("image", "").startswith("product-event-pipeline") and name not in test_services:
        fail(f"deploy/compose-test/compose.test.yml does not give service {name} the image it builds")
print(f"ok   compose: {len(services)} services, depends_on and variables consistent")

# Kubernetes: every overlay rendered (with and without the monitoring component) from a copy of
# k8s/ with throwaway secrets, every resource validated against the real schemas, then the rules
# the manifests promise (docs/deploy.md, "How these files are checked").
K8S_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]  # oldest supported, newest known
OVERLAYS = {"dev": "product-events-dev", "production": "product-events"}
SERVICE_PORTS = {"gateway": 8080, "dashboard": 8081, "processor": 8082, "notifier": 8083, "imager": 8084}
IMAGE = "registry.example.com/product-event-pipeline"
SCHEMAS = ROOT / "deploy/schemas"
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com/servicemonitor_v1.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "monitoring.coreos.com/podmonitor_v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com/prometheusrule_v1.json",
    ("rabbitmq.com/v1beta1", "RabbitmqCluster"): "rabbitmq.com/rabbitmqcluster_v1beta1.json",
    ("postgresql.cnpg.io/v1", "Cluster"): "postgresql.cnpg.io/cluster_v1.json",
}
# Secrets the operators make in the production overlay's namespace, with the keys we read.
OPERATOR_SECRETS = {
    "postgres-app": {"username", "password"},
    "postgres-ca": {"ca.crt"},
    "rabbitmq-default-user": {"username", "password"},
}
RECOMMENDED_LABELS = ["name", "instance", "component", "part-of", "version", "managed-by"]
def close_objects(schema):
    """A CRD schema with every object that lists its properties closed, as `kubectl apply`'s
    strict field validation treats it; `metadata` is checked apart, as ObjectMeta."""
    if isinstance(schema, dict):
        schema = {k: close_objects(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [close_objects(v) for v in schema]
    return schema


def load_crd_schema(relative):
    schema = json.loads((SCHEMAS / relative).read_text())
    if relative.startswith("monitoring.coreos.com/"):
        schema = close_objects(schema)
        schema["properties"]["metadata"] = {"type": "object"}
        schema["required"] = sorted(set(schema.get("required", [])) | {"metadata"})
    return schema


def k8s_validate(document, label):
    """Strict validation against the Kubernetes schemas (custom resources: deploy/schemas)."""
    kind, name = document.get("kind"), document.get("metadata", {}).get("name")
    key = (document.get("apiVersion"), kind)
    if key in CRD_SCHEMAS:
        try:
            jsonschema.validate(document, load_crd_schema(CRD_SCHEMAS[key]))
        except jsonschema.ValidationError as e:
            fail(f"{label}: {kind}/{name} at {'/'.join(map(str, e.absolute_path))}: {e.message}")
        meta = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": document["metadata"]}
        documents_to_check = [(meta, "metadata")]
        override = (
            document.get("spec", {}).get("override", {}).get("statefulSet", {}).get("spec", {})
            .get("template", {}).get("spec")
        )
        if override is not None:
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "override"}, "spec": override}
            documents_to_check.append((pod, "spec.override.statefulSet.spec.template.spec"))
    else:
        documents_to_check = [(document, None)]
    for candidate, part in documents_to_check:
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(candidate, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                where = f" ({part})" if part else ""
                fail(f"{label}: {kind}/{name}{where} against Kubernetes {version}: {e.message} "
                     f"at {'/'.join(map(str, e.path))}")
            except kubernetes_validate.SchemaNotFoundError:
                fail(f"{label}: {kind}/{name}: no schema for {document.get('apiVersion')} {kind} "
                     f"(a custom resource needs one in deploy/schemas)")
                return


def pod_specs(document):
    """(where, pod spec) of every pod a workload makes."""
    kind, spec = document["kind"], document.get("spec", {})
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        yield "spec.template.spec", spec["template"]["spec"]
    elif kind == "CronJob":
        yield "spec.jobTemplate.spec.template.spec", spec["jobTemplate"]["spec"]["template"]["spec"]
    elif kind == "Pod":
        yield "spec", spec


def all_containers(pod):
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for container in pod.get(field) or []:
            yield field, container


SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
                "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies",
                "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
                "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"}
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret"}


def restricted_violations(pod):
    """What the Pod Security Standards' "restricted" profile (which includes "baseline") refuses
    in a pod spec, control by control, as kubernetes.io/docs/concepts/security/pod-security-standards
    lists them."""
    problems = []
    pod_context = pod.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            problems.append(f"{field} is set (host namespaces)")
    if (pod_context.get("windowsOptions") or {}).get("hostProcess"):
        problems.append("the pod is a Windows HostProcess pod")
    for sysctl in pod_context.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            problems.append(f"sysctl {sysctl.get('name')} is not in the safe set")
    for volume in pod.get("volumes") or []:
        types = set(volume) - {"name"}
        if not types <= RESTRICTED_VOLUMES:
            problems.append(f"volume {volume.get('name')} is of type {sorted(types - RESTRICTED_VOLUMES)}")
    pod_seccomp = (pod_context.get("seccompProfile") or {}).get("type")
    if pod_seccomp not in (None, "RuntimeDefault", "Localhost"):
        problems.append(f"the pod's seccomp profile is {pod_seccomp}")
    problems += selinux_apparmor("the pod", pod_context)
    if pod_context.get("runAsUser") == 0:
        problems.append("the pod runs as uid 0")
    for field, container in all_containers(pod):
        who = f"{field[:-1]} {container.get('name')}"
        context = container.get("securityContext") or {}
        problems += selinux_apparmor(who, context)
        if context.get("privileged"):
            problems.append(f"{who} is privileged")
        if (context.get("windowsOptions") or {}).get("hostProcess"):
            problems.append(f"{who} is a Windows HostProcess container")
        if context.get("procMount") not in (None, "Default"):
            problems.append(f"{who} has procMount {context.get('procMount')}")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{who} does not set allowPrivilegeEscalation: false")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            problems.append(f"{who} does not drop ALL capabilities")
        for added in capabilities.get("add") or []:
            if added != "NET_BIND_SERVICE":
                problems.append(f"{who} adds capability {added}")
        if context.get("runAsNonRoot") is False or (
            context.get("runAsNonRoot") is None and pod_context.get("runAsNonRoot") is not True
        ):
            problems.append(f"{who} may run as root (runAsNonRoot is not true)")
        if context.get("runAsUser") == 0:
            problems.append(f"{who} runs as uid 0")
        seccomp = (context.get("seccompProfile") or {}).get("type")
        if seccomp not in (None, "RuntimeDefault", "Localhost") or (
            seccomp is None and pod_seccomp is None
        ):
            problems.append(f"{who} has no RuntimeDefault or Localhost seccomp profile")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                problems.append(f"{who} uses host port {port['hostPort']}")
    return problems


def selinux_apparmor(who, context):
    problems = []
    selinux = context.get("seLinuxOptions") or {}
    if selinux.get("type") not in (None, "", "container_t", "container_init_t", "container_kvm_t",
                                   "container_engine_t"):
        problems.append(f"{who} sets SELinux type {selinux.get('type')}")
    if selinux.get("user") or selinux.get("role"):
        problems.append(f"{who} sets an SELinux user or role")
    apparmor = (context.get("appArmorProfile") or {}).get("type")
    if apparmor not in (None, "RuntimeDefault", "Localhost"):
        problems.append(f"{who} has AppArmor profile {apparmor}")
    return problems


# The network flows the pipeline needs, and some it must not have: (from, to, port, allowed).
# An end is a pod's app.kubernetes.io/name (or pipeline/backend), or an address outside the cluster.
PUBLIC, PRIVATE, METADATA = "203.0.113.7", "10.20.30.40", "169.254.169.254"
SERVICES = list(SERVICE_PORTS)


def required_flows(overlay, monitoring):
    flows = []
    for service in SERVICES:
        flows += [(service, "rabbitmq", 5672, True), (service, "postgres", 5432, True),
                  (service, ("kube-dns", "kube-system"), 53, True)]
    for service in ("gateway", "processor", "imager", "dashboard"):
        flows.append((service, "redis" if overlay == "dev" else PRIVATE, 6379, True))
    flows.append(("notifier", "redis" if overlay == "dev" else PRIVATE, 6379, False))
    for service, port in SERVICE_PORTS.items():
        if service != "dashboard":
            flows.append(("dashboard", service, port, True))
    flows += [
        (PUBLIC, "gateway", 8080, True),
        (PUBLIC, "dashboard", 8081, False),
        (PUBLIC, "notifier", 8083, False),
        (PUBLIC, "processor", 8082, False),
        ("gateway", "notifier", 8083, False),
        ("gateway", "dashboard", 8081, False),
        ("processor", "gateway", 8080, False),
        ("gateway", PUBLIC, 443, True),
        ("gateway", PUBLIC, 80, False),
        ("processor", PUBLIC, 443, False),
        ("dashboard", PUBLIC, 443, False),
        ("first-api-key", "postgres", 5432, True),
        ("first-api-key", "rabbitmq", 5672, False),
        ("first-api-key", PUBLIC, 443, False),
        (PUBLIC, "postgres", 5432, False),
        (PUBLIC, "rabbitmq", 5672, False),
        ("rabbitmq", PUBLIC, 443, overlay == "production"),  # peer discovery asks the API server
    ]
    # The notifier (webhooks) and the imager (source images) fetch the URLs they are given: on
    # the internet, never in a private network or at the metadata service.
    for fetcher in ("notifier", "imager"):
        flows += [(fetcher, PUBLIC, 443, True), (fetcher, PUBLIC, 80, True),
                  (fetcher, PRIVATE, 443, False), (fetcher, PRIVATE, 80, False),
                  (fetcher, METADATA, 80, False)]
    if overlay == "dev":
        flows += [("dashboard", "redis", 6379, True), (PUBLIC, "redis", 6379, False)]
    else:
        flows += [
            ("rabbitmq", "rabbitmq", 4369, True), ("rabbitmq", "rabbitmq", 25672, True),
            ("postgres", "postgres", 5432, True), ("postgres", "postgres", 8000, True),
            (("cloudnative-pg", "cnpg-system"), "postgres", 8000, True),
            (("rabbitmq-cluster-operator", "rabbitmq-system"), "rabbitmq", 15672, True),
            ("gateway", "rabbitmq", 15672, False),
        ]
    prometheus = ("prometheus", "monitoring")
    for service, port in SERVICE_PORTS.items():
        flows.append((prometheus, service, port, monitoring or service == "gateway"))
    flows.append((prometheus, "rabbitmq", 15692, monitoring))
    if overlay == "production":
        flows.append((prometheus, "postgres", 9187, monitoring))
    return flows


def workload_pods(documents, namespace):
    """The pods of the render, by name: their labels and namespace. The operators' pods come from
    their resources, with the labels the operators give them."""
    pods = {}
    for document in documents:
        for _, pod in pod_specs(document):
            labels = (document["spec"].get("template", {}).get("metadata") or {}).get("labels", {})
            pods[labels.get("pipeline/backend") or labels["app.kubernetes.io/name"]] = labels
        if document["kind"] == "Cluster":
            labels = dict(document["spec"].get("inheritedMetadata", {}).get("labels", {}))
            labels["cnpg.io/cluster"] = document["metadata"]["name"]
            pods["postgres"] = labels
        if document["kind"] == "RabbitmqCluster":
            template = document["spec"].get("override", {}).get("statefulSet", {}).get("spec", {})
            labels = dict(template.get("template", {}).get("metadata", {}).get("labels", {}))
            labels["app.kubernetes.io/name"] = document["metadata"]["name"]
            pods["rabbitmq"] = labels
    return {name: {"labels": labels, "namespace": namespace} for name, labels in pods.items()}


def selector_matches(selector, labels):
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def peer_matches(peer, end, namespace):
    """Whether a NetworkPolicy peer (from/to entry) covers an end of a flow."""
    if "ipBlock" in peer:
        if "address" not in end:
            return False
        address = ipaddress.ip_address(end["address"])
        block = peer["ipBlock"]
        network = ipaddress.ip_network(block["cidr"])
        if address.version != network.version or address not in network:
            return False
        return not any(
            address.version == ipaddress.ip_network(e).version and address in ipaddress.ip_network(e)
            for e in block.get("except", [])
        )
    if "address" in end:
        return False
    if "namespaceSelector" in peer:
        ns_labels = {"kubernetes.io/metadata.name": end["namespace"]}
        if not selector_matches(peer["namespaceSelector"], ns_labels):
            return False
    elif end["namespace"] != namespace:
        return False
    return "podSelector" not in peer or selector_matches(peer["podSelector"], end["labels"])


def ports_match(rule, port):
    return not rule.get("ports") or any(p.get("port") in (None, port) for p in rule["ports"])


def side_allows(policies, pod, other, port, direction, namespace):
    """Whether the policies of `pod`'s namespace let a flow with `other` through on its side."""
    kind, peers = ("Ingress", "from") if direction == "in" else ("Egress", "to")
    selecting = [p for p in policies
                 if kind in p["spec"].get("policyTypes", ["Ingress"])
                 and selector_matches(p["spec"]["podSelector"], pod["labels"])]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get(kind.lower()) or []:
            if ports_match(rule, port) and (
                not rule.get(peers) or any(peer_matches(peer, other, namespace) for peer in rule[peers])
            ):
                return True
    return False


def check_flows(documents, label, overlay, namespace, monitoring):
    policies = [d for d in documents if d["kind"] == "NetworkPolicy"]
    pods = workload_pods(documents, namespace)
    if not any(p["spec"]["podSelector"] == {} and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
               and not p["spec"].get("ingress") and not p["spec"].get("egress") for p in policies):
        fail(f"{label}: no default-deny NetworkPolicy (every pod, ingress and egress)")

    def end(spec):
        if isinstance(spec, tuple):  # (name, namespace) of a pod elsewhere in the cluster
            return {"labels": {"app.kubernetes.io/name": spec[0], "k8s-app": spec[0]},
                    "namespace": spec[1]}
        if spec[0].isdigit():
            return {"address": spec}
        return pods.get(spec)

    wrong = 0
    for source, target, port, expected in required_flows(overlay, monitoring):
        src, dst = end(source), end(target)
        if src is None or dst is None:
            fail(f"{label}: flow {source} -> {target}: no such pod in the render")
            continue
        allowed = (
            ("address" in src or src["namespace"] != namespace
             or side_allows(policies, src, dst, port, "out", namespace))
            and ("address" in dst or dst["namespace"] != namespace
                 or side_allows(policies, dst, src, port, "in", namespace))
        )
        if allowed != expected:
            wrong += 1
            fail(f"{label}: {source} -> {target}:{port} is {'open' if allowed else 'closed'}, "
                 f"should be {'open' if expected else 'closed'}")
    return wrong


def env_names(container):
    return {e["name"] for e in container.get("env") or []}


def check_render(documents, label, overlay, namespace, monitoring, read_by_code, aws_settings):
    by_kind = {}
    for document in documents:
        by_kind.setdefault(document["kind"], {})[document["metadata"]["name"]] = document
        k8s_validate(document, label)
    config = next(d for n, d in by_kind["ConfigMap"].items() if n.startswith("pipeline-config"))
    settings = config["data"]

    # The namespace: set by the overlay on every namespaced object, restricted by Pod Security.
    namespaces = list(by_kind.get("Namespace", {}).values())
    if [n["metadata"]["name"] for n in namespaces] != [namespace]:
        fail(f"{label}: the overlay must make exactly its namespace {namespace}")
    elif namespaces[0]["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce") != "restricted":
        fail(f"{label}: namespace {namespace} does not enforce Pod Security \"restricted\"")
    for document in documents:
        if document["kind"] != "Namespace" and document["metadata"].get("namespace") != namespace:
            fail(f"{label}: {document['kind']}/{document['metadata']['name']} is not in {namespace}")
    for variable in ("AMQP_URL", "REDIS_URL", "DATABASE_URL"):
        for url in filter(None, settings.get(variable, "").split(",")):
            host = urllib.parse.urlsplit(url).hostname or ""
            if "." in host:
                fail(f"{label}: {variable} names {host}: use the Service's short name, resolved in "
                     f"the pod's namespace")

    # Secrets and ConfigMaps referred to exist with the keys read (or an operator makes them).
    rendered_keys = {
        (kind, name): set(doc.get("data", {})) | set(doc.get("stringData", {}))
        for kind in ("Secret", "ConfigMap") for name, doc in by_kind.get(kind, {}).items()
    }

    def refer(kind, name, key, optional, who):
        if (kind, name) in rendered_keys:
            if key is not None and key not in rendered_keys[(kind, name)] and not optional:
                fail(f"{label}: {who} reads key {key} of {kind} {name}, which has no such key")
        elif kind == "Secret" and overlay == "production" and name in OPERATOR_SECRETS:
            if key is not None and key not in OPERATOR_SECRETS[name]:
                fail(f"{label}: {who} reads key {key} of the operator's Secret {name}")
        else:
            fail(f"{label}: {who} refers to {kind} {name}, which nothing makes")

    hpa_targets = {
        h["spec"]["scaleTargetRef"]["name"]: h for h in by_kind.get("HorizontalPodAutoscaler", {}).values()
    }
    grace_floor = int(settings["SHUTDOWN_DEADLINE_SECS"])
    for document in documents:
        kind, name = document["kind"], document["metadata"]["name"]
        for _, pod in pod_specs(document):
            who = f"{kind}/{name}"
            for problem in restricted_violations(pod):
                fail(f"{label}: {who} breaks Pod Security \"restricted\": {problem}")
            selector = document["spec"].get("selector", {}).get("matchLabels", {})
            if "app.kubernetes.io/version" in selector or "app.kubernetes.io/instance" in selector:
                fail(f"{label}: {who}'s selector holds a label that changes (version, instance)")
            workload_labels = document["metadata"].get("labels", {})
            template_labels = (document["spec"].get("template", {}).get("metadata") or {}).get("labels", {})
            for short in RECOMMENDED_LABELS:
                for labels, part in ((workload_labels, "metadata"), (template_labels, "pod template")):
                    if f"app.kubernetes.io/{short}" not in labels:
                        fail(f"{label}: {who} has no app.kubernetes.io/{short} label on its {part}")
            for volume in pod.get("volumes") or []:
                if "secret" in volume:
                    for item in volume["secret"].get("items") or [{"key": None}]:
                        refer("Secret", volume["secret"]["secretName"], item["key"],
                              volume["secret"].get("optional"), who)
            for _, container in all_containers(pod):
                image = container.get("image", "")
                if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
                    fail(f"{label}: {who} runs {image}, which is not pinned to a version")
                probe = container.get("readinessProbe")
                if probe and probe.get("timeoutSeconds", 1) < 2:
                    fail(f"{label}: {who}'s readiness probe times out in under 2 s")
                for source in container.get("envFrom") or []:
                    for field, ref_kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                        if field in source:
                            refer(ref_kind, source[field]["name"], None, source[field].get("optional"), who)
                for variable in container.get("env") or []:
                    value_from = variable.get("valueFrom") or {}
                    for field, ref_kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                        if field in value_from:
                            ref = value_from[field]
                            refer(ref_kind, ref["name"], ref["key"], ref.get("optional"), who)
                if not image.startswith(IMAGE + ":"):
                    continue
                # Our own image: the service's own settings, probes, drain and file system.
                version = template_labels.get("app.kubernetes.io/version")
                if image != f"{IMAGE}:{version}":
                    fail(f"{label}: {who} runs {image} but is labelled version {version}")
                binary = container["args"][0]
                entry_points.add(binary)
                context = container.get("securityContext") or {}
                if context.get("readOnlyRootFilesystem") is not True:
                    fail(f"{label}: {who}: our image runs with a read-only root file system")
                if pod.get("automountServiceAccountToken") is not False:
                    fail(f"{label}: {who} mounts a service account token it never uses")
                names = env_names(container)
                if "envFrom" in container:
                    names |= set(settings)
                for variable in sorted(names - read_by_code - aws_settings):
                    fail(f"{label}: {who} sets {variable}, which no service reads")
                if secret_like := [e["name"] for e in container.get("env") or [] if "value" in e
                                   and re.search(r"PASSWORD|SECRET|FIRST_API_KEY", e["name"])]:
                    fail(f"{label}: {who} has {secret_like} as plain values (they belong in a Secret)")
                if kind != "Deployment":
                    continue
                addr = {e["name"]: e.get("value") for e in container.get("env") or []}.get(
                    f"{binary.upper()}_ADDR")
                port = SERVICE_PORTS.get(binary)
                if addr != f"0.0.0.0:{port}":
                    fail(f"{label}: {who} runs {binary} but sets {binary.upper()}_ADDR={addr} "
                         f"(it listens on {port})")
                if [p.get("containerPort") for p in container.get("ports") or []] != [port]:
                    fail(f"{label}: {who} should expose only port {port}")
                for probe_name, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready")):
                    probe = container.get(probe_name) or {}
                    if (probe.get("httpGet") or {}).get("path") != path:
                        fail(f"{label}: {who} has no {probe_name} on {path}")
                if (container.get("livenessProbe") or {}).get("timeoutSeconds", 1) < 2:
                    fail(f"{label}: {who}'s liveness probe times out in under 2 s")
                pause = (((container.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds")
                if not pause:
                    fail(f"{label}: {who} has no preStop sleep: endpoints would still route to a "
                         f"pod that stopped listening")
                grace = pod.get("terminationGracePeriodSeconds", 30)
                if grace <= grace_floor + (pause or 0):
                    fail(f"{label}: {who}'s grace period ({grace} s) does not exceed the drain "
                         f"deadline ({grace_floor} s) plus the preStop pause ({pause} s)")
        if kind == "Deployment" and name in hpa_targets and "replicas" in document["spec"]:
            fail(f"{label}: Deployment/{name} sets replicas, which its HPA owns: every apply would "
                 f"reset it")
    for name, hpa in hpa_targets.items():
        if name not in by_kind.get("Deployment", {}):
            fail(f"{label}: HPA {hpa['metadata']['name']} targets Deployment {name}, which is not here")
    processor_hpa = hpa_targets.get("processor")
    if processor_hpa and processor_hpa["spec"]["maxReplicas"] > int(settings["INGEST_SHARDS"]):
        fail(f"{label}: the processor HPA's maxReplicas exceeds INGEST_SHARDS: replicas past the "
             f"shard count own nothing")

    # The first-api-key Job: its settings copied in, its Secret under a name that never changes.
    job = by_kind.get("Job", {}).get("first-api-key")
    if job is None:
        fail(f"{label}: no first-api-key Job")
    else:
        env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
        for variable in ("DATABASE_URL", "PIPELINE_NAMESPACE"):
            if env.get(variable, {}).get("value") != settings.get(variable):
                fail(f"{label}: the Job's {variable} is not pipeline-config's (the overlay's "
                     f"replacements)")
        if not job["spec"].get("ttlSecondsAfterFinished"):
            fail(f"{label}: the first-api-key Job never goes away, so no later apply runs it again")
        if "FIRST_API_KEY" not in env or "valueFrom" not in env["FIRST_API_KEY"]:
            fail(f"{label}: the Job reads FIRST_API_KEY from no Secret")
    for document in documents:
        if document["kind"] in ("Deployment", "StatefulSet"):
            for _, container in all_containers(document["spec"]["template"]["spec"]):
                for variable in container.get("env") or []:
                    ref = (variable.get("valueFrom") or {}).get("secretKeyRef") or {}
                    if "FIRST_API_KEY" in (ref.get("key"), variable["name"]):
                        fail(f"{label}: {document['kind']}/{document['metadata']['name']} is given "
                             f"FIRST_API_KEY: only the Job needs it")
                for source in container.get("envFrom") or []:
                    name = (source.get("secretRef") or {}).get("name")
                    if name and "FIRST_API_KEY" in by_kind.get("Secret", {}).get(name, {}).get("data", {}):
                        fail(f"{label}: {document['kind']}/{document['metadata']['name']} takes the "
                             f"whole Secret {name}, FIRST_API_KEY included")

    # The RabbitMQ operator's pods: what the override adds for "restricted" (the operator's own
    # template supplies the rest: its uid 999, its volumes).
    for cluster in by_kind.get("RabbitmqCluster", {}).values():
        template = cluster["spec"].get("override", {}).get("statefulSet", {}).get("spec", {}).get("template", {})
        pod = template.get("spec", {})
        context = pod.get("securityContext") or {}
        if context.get("runAsNonRoot") is not True or (context.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            fail(f"{label}: RabbitmqCluster override: the pod needs runAsNonRoot and a RuntimeDefault seccomp profile")
        overridden = {c["name"]: c for _, c in all_containers(pod)}
        for container_name in ("rabbitmq", "setup-container"):
            context = (overridden.get(container_name) or {}).get("securityContext") or {}
            if context.get("allowPrivilegeEscalation") is not False or "ALL" not in (context.get("capabilities") or {}).get("drop", []):
                fail(f"{label}: RabbitmqCluster override: container {container_name} needs "
                     f"allowPrivilegeEscalation: false and capabilities drop ALL")
    for cluster in by_kind.get("Cluster", {}).values():
        if cluster["spec"]["instances"] < 3:
            fail(f"{label}: the CloudNativePG cluster has fewer than 3 instances")
        image = cluster["spec"].get("imageName", "")
        if ":" not in image.rsplit("/", 1)[-1]:
            fail(f"{label}: the CloudNativePG cluster's image {image} is not pinned")

    # Monitoring: what the component carries is what deploy/ holds.
    if monitoring:
        rule = by_kind.get("PrometheusRule", {}).get("pipeline")
        alerts = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())["groups"]
        if rule is None or rule["spec"]["groups"] != alerts:
            fail(f"{label}: the PrometheusRule is not deploy/prometheus/alerts.yml's rules")
        dashboard = by_kind.get("ConfigMap", {}).get("pipeline-grafana-dashboard")
        expected = (ROOT / "deploy/grafana/dashboards/pipeline.json").read_text()
        if dashboard is None or dashboard["data"].get("pipeline.json") != expected:
            fail(f"{label}: the Grafana dashboard ConfigMap is not deploy/grafana/dashboards/pipeline.json")

    wrong = check_flows(documents, label, overlay, namespace, monitoring)
    return wrong


def kustomize_version():
    try:
        output = run("kubectl", "version", "--client", "-o", "json").stdout
    except (FileNotFoundError, subprocess.CalledProcessError):
        return None
    match = re.match(r"v(\d+)", json.loads(output).get("kustomizeVersion", ""))
    return int(match.group(1)) if match else None


def render(scratch, overlay, monitoring):
    """Renders an overlay from a copy of k8s/ whose secrets.env init-env.sh made from the template."""
    tree = pathlib.Path(scratch) / f"{overlay}-{'monitoring' if monitoring else 'plain'}"
    shutil.copytree(ROOT / "k8s", tree, ignore=shutil.ignore_patterns("secrets.env"))
    overlay_dir = tree / "overlays" / overlay
    subprocess.run(["bash", str(ROOT / "scripts/init-env.sh"), str(overlay_dir / "secrets.env"),
                    str(overlay_dir / "secrets.env.example")], check=True, capture_output=True)
    if monitoring:
        with open(overlay_dir / "kustomization.yaml", "a") as kustomization:
            kustomization.write("components:\n  - ../../components/monitoring\n")
    output = run("kubectl", "kustomize", str(overlay_dir)).stdout
    return [d for d in yaml.safe_load_all(output) if d]


def check_sources():
    """What is committed under k8s/: no Secret, no secret value, no namespace outside the overlays."""
    tracked = run("git", "ls-files", "k8s").stdout.split()
    on_disk = [str(p.relative_to(ROOT)) for p in (ROOT / "k8s").rglob("*") if p.is_file()]
    for path in sorted(set(tracked) | set(on_disk)):
        file = ROOT / path
        if not file.exists():
            continue
        text = file.read_text()
        in_overlay = path.startswith("k8s/overlays/")
        if re.search(r"ppk_[A-Za-z0-9_-]{43}", text):
            fail(f"{path} holds an API key")
        if re.search(r"\.svc\b|\.cluster\.local", text):
            fail(f"{path} names a Service with its namespace: use the short name")
        if path.endswith((".yaml", ".yml")):
            for document in filter(None, yaml.safe_load_all(text)):
                if document.get("kind") == "Secret":
                    fail(f"{path} holds a Secret: secrets come from a secretGenerator's git-ignored file")
                if not in_overlay and (document.get("namespace") or document.get("metadata", {}).get("namespace")):
                    fail(f"{path} names a namespace: only an overlay sets one")
                if document.get("kind") == "Namespace" and not in_overlay:
                    fail(f"{path} makes a Namespace: only an overlay does")
                for generator in document.get("secretGenerator") or []:
                    if generator.get("literals"):
                        fail(f"{path}: secretGenerator {generator['name']} has literals (committed secrets)")
                    for source in (generator.get("envs") or []) + (generator.get("files") or []):
                        source_path = str((file.parent / source.split("=")[-1]).relative_to(ROOT))
                        ignored = subprocess.run(["git", "check-ignore", "-q", source_path], cwd=ROOT)
                        if ignored.returncode != 0 or source_path in tracked:
                            fail(f"{path}: {source_path} (secretGenerator {generator['name']}) is "
                                 f"not git-ignored, or is committed")
                        template = ROOT / (source_path + ".example")
                        if not template.exists():
                            fail(f"{path}: {source_path} has no template {template.name}")
        if path.endswith(".env.example"):
            for line in text.splitlines():
                name, _, value = line.partition("=")
                if (not line.startswith("#") and value and re.search(r"PASSWORD|SECRET|KEY|TOKEN", name)):
                    fail(f"{path}: {name} has a value in the template (init-env.sh fills it)")
    component = ROOT / PROMETHEUS_RULE
    if not component.exists() or component.read_text() != prometheus_rule_text():
        fail(f"{PROMETHEUS_RULE} differs from deploy/prometheus/alerts.yml: run python3 deploy/check.py --sync")
    for copy, source in MONITORING_FILES.items():
        if not (ROOT / copy).exists() or (ROOT / copy).read_bytes() != (ROOT / source).read_bytes():
            fail(f"{copy} differs from {source}: run python3 deploy/check.py --sync")


entry_points = set()
if (major := kustomize_version()) is None or major < 5:
    fail("kubectl with kustomize 5 or later is needed (components, labels, replacements)")
else:
    check_sources()
    renders = 0
    with tempfile.TemporaryDirectory() as scratch:
        for overlay, namespace in OVERLAYS.items():
            jobs = []
            for monitoring in (False, True):
                label = f"k8s/overlays/{overlay}{' + monitoring' if monitoring else ''}"
                try:
                    documents = render(scratch, overlay, monitoring)
                except subprocess.CalledProcessError as e:
                    fail(f"{label}: kustomize failed:\n{e.stdout}{e.stderr}")
                    continue
                before = len(failures)
                check_render(documents, label, overlay, namespace, monitoring, read_by_code, aws_settings)
                jobs += [d for d in documents if d["kind"] == "Job"]
                renders += 1
                if len(failures) == before:
                    print(f"ok   {label}: {len(documents)} resources valid (Kubernetes "
                          f"{' and '.join(K8S_VERSIONS)}, custom resources per deploy/schemas), "
                          f"Pod Security restricted, probes, drain, secrets, namespace, network flows")
            # Two renders, two sets of fresh secrets: the Job must not change (its pod template is
            # immutable, so a changed one could not be applied over the last).
            if len(jobs) == 2 and jobs[0] != jobs[1]:
                fail(f"k8s/overlays/{overlay}: the first-api-key Job changes with the secrets' "
                     f"values (it must refer only to names without a hash suffix)")
            elif len(jobs) == 2:
                print(f"ok   k8s/overlays/{overlay}: the first-api-key Job is the same whatever the secrets")

# Entry points: every command is a binary of the workspace.
metadata = json.loads(run("cargo", "metadata", "--no-deps", "--format-version", "1").stdout)
binaries = {t["name"] for p in metadata["packages"] for t in p["targets"] if "bin" in t["kind"]}
commands = set(re.findall(r'CMD \["([a-z-]+)"\]', (ROOT / "Dockerfile").read_text()))
commands |= {s["command"][0] for s in ours if s.get("command")}
commands |= entry_points
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

# Every alert rule names its runbook: a section of docs/runbooks.md.
runbooks = ROOT / "docs/runbooks.md"
sections = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.+)$", runbooks.read_text(), re.M)}
rules = [rule for group in yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())["groups"]
         for rule in group["rules"] if "alert" in rule]
before = len(failures)
for rule in rules:
    url = (rule.get("annotations") or {}).get("runbook_url")
    page, _, anchor = (url or "").partition("#")
    if not url:
        fail(f"deploy/prometheus/alerts.yml: {rule['alert']} has no annotations.runbook_url")
    elif page != "docs/runbooks.md" or anchor not in sections:
        fail(f"deploy/prometheus/alerts.yml: {rule['alert']}'s runbook_url {url} is no section of docs/runbooks.md")
if len(failures) == before:
    print(f"ok   every alert rule ({len(rules)}) names its runbook in docs/runbooks.md")

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
