#!/usr/bin/env python3
"""Validates Tribune's rendered Kubernetes manifests; run by scripts/test-k8s.

Usage: validate.py --repo DIR [--k8s-version V ...] NAME=RENDERED.yaml ...

NAME is the kustomization's path under k8s/ (``overlays/dev``); RENDERED is
the output of ``kubectl kustomize k8s/NAME``. Three layers of checks:

1. Schema: every object against the Kubernetes OpenAPI schemas shipped inside
   the kubernetes-validate package (offline), strict (unknown fields are
   errors), for each requested Kubernetes version. Kinds without a shipped
   schema fail unless k8s/tools/schemas/ has one (ServiceMonitor).
2. Consistency: what the schemas cannot see. The hub's ConfigMap is parsed as
   TOML and held against the Deployment (listen and internal_listen ports
   vs container ports,
   probes and scrape annotation; drain.grace_ms vs the termination grace
   period; limits.max_connections vs the memory limit; bus.url vs the
   NetworkPolicy and the NATS Service); selectors of the Service, PDB,
   NetworkPolicy, ServiceMonitor and topology spread match the pods; the
   ingress timeouts outlast the heartbeat; the load test's service variables
   name Services and ports that exist.
3. Per render expectations (dev: one replica and a NATS StatefulSet; prod:
   three or more replicas, stream replicas 3), plus the source files that are
   not rendered: the prod tribune.toml may differ from the base one only in
   the keys prod is meant to change, and k8s/nats/values.yaml must describe a
   3-node JetStream cluster with file storage.
4. The bus's least privilege (issue 13): no shipped NATS runs without auth
   (the Helm values include nats/least-privilege.conf verbatim, with TLS and
   passwords from Secrets, nats-box off; the dev NATS mounts the same file
   and takes the same Secrets); the file itself writes no password and lets
   nobody publish to tribune.live.>; hubs run as the hub user with
   manage_stream = false, their password and statistics key from Secrets
   and, on tls:// URLs, a CA from a mounted Secret; the Job tribune-stream
   declares the stream as the stream administrator from the hubs' own
   tribune.toml; the NetworkPolicy `nats` admits only the hubs, that Job,
   named namespaces (editors, monitoring) and the NATS servers.

Prints one line per failure and a closing ``k8s: N passed, M failed`` line;
exits 1 when anything failed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlparse

import jsonschema
import kubernetes_validate.utils as kv
import yaml

NAMESPACE = "tribune"
HUB = "tribune-hub"

# Memory sizing (k8s/README.md, "Sizing"). The figures are assumptions until
# BENCHMARKS.md has measured ones; update both places together.
SIZING_BASE_MIB = 64  # process, runtime, tokio workers
SIZING_CACHE_MIB = 256  # relay caches: active topics x retained x message size
SIZING_PER_CONN_KIB = 16  # user space + kernel socket + in-flight frames
SIZING_HEADROOM = 1.25

# Keys in which k8s/overlays/prod/tribune.toml may differ from the base file.
PROD_TOML_CHANGES = {"limits.max_connections", "bus.replicas", "bus.url", "bus.tls_required"}

# The NATS configuration every deployment ships (nats/least-privilege.conf)
# and the roles' labels and Secrets (k8s/README.md, "Secrets").
LEAST_PRIVILEGE = "least-privilege.conf"
NATS_LABELS = {"app.kubernetes.io/name": "nats", "app.kubernetes.io/component": "nats"}
STREAM_JOB = "tribune-stream"
# nats/least-privilege.conf, read at start.
SHIPPED_LEAST_PRIVILEGE = ""
NATS_PASSWORDS = {"EDITOR_PASSWORD": "tribune-nats-editor", "HUB_PASSWORD": "tribune-nats-hub",
                  "STREAM_ADMIN_PASSWORD": "tribune-nats-stream-admin"}

# Per render: what must hold beyond the common checks.
EXPECT = {
    "base": {"replicas_min": 2, "hpa": True, "bus_replicas": 1},
    "overlays/dev": {"replicas_exact": 1, "hpa": False, "nats": True, "bus_replicas": 1},
    "overlays/prod": {"replicas_min": 3, "hpa": True, "hpa_min": 3, "bus_replicas": 3,
                      "zone_strict": True, "nats": False},
    "examples/prod-ingress": {"replicas_min": 3, "hpa": True, "hpa_min": 3, "bus_replicas": 3,
                              "zone_strict": True, "ingress": True, "service_monitor": True},
    "loadtest": {"job": True},
    # Regions (k8s/README.md, "Regions"): prod in each region's cluster.
    "overlays/region-eu": {"replicas_min": 3, "hpa": True, "hpa_min": 3, "bus_replicas": 3,
                           "zone_strict": True, "nats": False, "node_prefix": "eu-"},
    "overlays/region-us": {"replicas_min": 3, "hpa": True, "hpa_min": 3, "bus_replicas": 3,
                           "zone_strict": True, "nats": False, "node_prefix": "us-",
                           "mirror": ("TRIBUNE_US", "TRIBUNE", "$JS.eu.API")},
    "overlays/region-us/promote": {"promote": True},
}


class Checker:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, ok: bool, where: str, what: str) -> bool:
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            print(f"FAIL {where}: {what}")
        return ok


def parse_quantity_mib(q: str | int) -> float:
    """A Kubernetes memory quantity in MiB."""
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 * 1024,
             "k": 1000 / 1048576, "M": 1e6 / 1048576, "G": 1e9 / 1048576}
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(q))
    if not m or (m.group(2) and m.group(2) not in units):
        raise ValueError(f"unsupported quantity {q!r}")
    return float(m.group(1)) * (units[m.group(2)] if m.group(2) else 1 / 1048576)


def seconds(duration: str) -> float:
    """A NATS/Go duration like ``10s``, ``1m30s``."""
    total, rest = 0.0, duration.strip()
    for value, unit in re.findall(r"([0-9.]+)(ms|s|m|h)", rest):
        total += float(value) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    if not re.fullmatch(r"(([0-9.]+)(ms|s|m|h))+", rest):
        raise ValueError(f"unsupported duration {duration!r}")
    return total


def version_tuple(tag: str) -> tuple[int, ...]:
    m = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?", tag)
    if not m:
        raise ValueError(f"no version in image tag {tag!r}")
    return tuple(int(x or 0) for x in m.groups())


def selects(selector: dict, labels: dict) -> bool:
    """matchLabels semantics (matchExpressions are not used here)."""
    match = selector.get("matchLabels", selector) if selector else {}
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def flatten(table: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in table.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


class Render:
    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.objects = [o for o in yaml.safe_load_all(path.read_text()) if o]

    def find(self, kind: str, name: str | None = None) -> list[dict]:
        return [o for o in self.objects if o.get("kind") == kind
                and (name is None or o["metadata"]["name"] == name)]

    def one(self, kind: str, name: str) -> dict | None:
        found = self.find(kind, name)
        return found[0] if len(found) == 1 else None


def validate_schemas(c: Checker, render: Render, versions: list[str], local: dict) -> None:
    for obj in render.objects:
        kind, api = obj.get("kind"), obj.get("apiVersion")
        where = f"{render.name} {kind}/{obj.get('metadata', {}).get('name')}"
        if (api, kind) in local:
            try:
                jsonschema.Draft202012Validator(local[(api, kind)]).validate(obj)
                c.check(True, where, "")
            except jsonschema.ValidationError as e:
                c.check(False, where, f"{'.'.join(map(str, e.path))}: {e.message}")
            continue
        for version in versions:
            try:
                kv.validate(obj, version, strict=True)
                c.check(True, where, "")
            except kv.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                c.check(False, where, f"k8s {version}: {path}: {e.message}")
            except kv.SchemaNotFoundError as e:
                c.check(False, where, f"no schema: {e.message}")
        if kind != "Namespace":
            c.check(obj["metadata"].get("namespace") == NAMESPACE, where,
                    f"namespace is {obj['metadata'].get('namespace')!r}, not {NAMESPACE!r}")
        for container in pod_containers(obj):
            image = container.get("image", "")
            c.check(re.search(r":[^/]+$", image) is not None or "@sha256:" in image, where,
                    f"container {container['name']} image {image!r} has no tag")


def pod_spec(obj: dict) -> dict | None:
    kind = obj.get("kind")
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"):
        return obj["spec"]["template"]["spec"]
    if kind == "Job":
        return obj["spec"]["template"]["spec"]
    if kind == "Pod":
        return obj["spec"]
    return None


def pod_containers(obj: dict) -> list[dict]:
    spec = pod_spec(obj)
    return (spec.get("containers", []) + spec.get("initContainers", [])) if spec else []


def check_hardened(c: Checker, where: str, spec: dict) -> None:
    psc = spec.get("securityContext", {})
    c.check(psc.get("runAsNonRoot") is True, where, "pod securityContext.runAsNonRoot is not true")
    c.check(psc.get("runAsUser", 0) != 0, where, "pod runs as uid 0")
    c.check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where,
            "pod seccompProfile is not RuntimeDefault")
    for ctr in spec["containers"]:
        sc = ctr.get("securityContext", {})
        w = f"{where} container {ctr['name']}"
        c.check(sc.get("allowPrivilegeEscalation") is False, w, "allowPrivilegeEscalation is not false")
        c.check(sc.get("readOnlyRootFilesystem") is True, w, "readOnlyRootFilesystem is not true")
        c.check("ALL" in sc.get("capabilities", {}).get("drop", []), w, "capabilities do not drop ALL")


def check_hub(c: Checker, r: Render, expect: dict) -> None:
    where = f"{r.name} Deployment/{HUB}"
    dep = r.one("Deployment", HUB)
    if not c.check(dep is not None, r.name, f"exactly one Deployment {HUB}"):
        return
    tpl = dep["spec"]["template"]
    spec, labels = tpl["spec"], tpl["metadata"]["labels"]
    ctr = next((x for x in spec["containers"] if x["name"] == "hub"), None)
    if not c.check(ctr is not None, where, "no container named hub"):
        return
    check_hardened(c, where, spec)
    c.check(selects(dep["spec"]["selector"], labels), where, "selector does not match the pod labels")

    # The config file: --config PATH inside the ConfigMap volume's mount.
    args = ctr.get("args", [])
    cfg_path = args[args.index("--config") + 1] if "--config" in args else None
    if not c.check(cfg_path is not None, where, "hub is not started with --config"):
        return
    mount_dir, key = cfg_path.rsplit("/", 1)
    mount = next((m for m in ctr.get("volumeMounts", []) if m["mountPath"] == mount_dir), None)
    if not c.check(mount is not None, where, f"nothing is mounted at {mount_dir}"):
        return
    vol = next((v for v in spec.get("volumes", []) if v["name"] == mount["name"]), None)
    cm_name = (vol or {}).get("configMap", {}).get("name")
    cm = r.one("ConfigMap", cm_name) if cm_name else None
    if not c.check(cm is not None and key in cm.get("data", {}), where,
                   f"volume {mount['name']} is not a ConfigMap of this render with key {key}"):
        return
    try:
        conf = tomllib.loads(cm["data"][key])
    except tomllib.TOMLDecodeError as e:
        c.check(False, where, f"ConfigMap {cm_name} {key}: {e}")
        return
    c.check(cm_name.startswith("tribune-config-"), where,
            "the ConfigMap has no hash suffix: a config change would not roll the pods")

    # Ports: the public one (websockets) and the internal one (/metrics,
    # /v1/publish, probes), each in the config, the container, the probes,
    # the scrape annotation and the Service.
    listen = conf.get("listen", "127.0.0.1:8080")
    host, _, port_s = listen.rpartition(":")
    port = int(port_s)
    c.check(host in ("0.0.0.0", "[::]"), where, f"listen = {listen!r} is not reachable from outside the pod")
    internal = conf.get("internal_listen", "127.0.0.1:9090")
    ihost, _, iport_s = internal.rpartition(":")
    iport = int(iport_s)
    c.check(ihost in ("0.0.0.0", "[::]"), where,
            f"internal_listen = {internal!r} is not reachable by the kubelet's probes and Prometheus")
    c.check(iport != port, where, "internal_listen and listen share a port")
    ports = {p.get("name"): p["containerPort"] for p in ctr.get("ports", [])}
    c.check(port in ports.values(), where, f"listen port {port} is not a containerPort ({ports})")
    c.check(iport in ports.values(), where, f"internal_listen port {iport} is not a containerPort ({ports})")
    port_names = {n for n, p in ports.items() if p == port}
    iport_names = {n for n, p in ports.items() if p == iport}

    def probe_ok(probe: dict | None, path: str) -> bool:
        get = (probe or {}).get("httpGet", {})
        return get.get("path") == path and (get.get("port") == iport or get.get("port") in iport_names)

    # On the internal port: a public port at its connection cap answers 503
    # to every new socket, and a liveness probe must not read that as death.
    c.check(probe_ok(ctr.get("readinessProbe"), "/readyz"), where,
            "readinessProbe is not GET /readyz on the internal port")
    c.check(probe_ok(ctr.get("livenessProbe"), "/healthz"), where,
            "livenessProbe is not GET /healthz on the internal port")
    c.check(probe_ok(ctr.get("startupProbe"), "/healthz"), where,
            "startupProbe is not GET /healthz on the internal port")
    ann = tpl["metadata"].get("annotations", {})
    c.check(ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/port") == str(iport)
            and ann.get("prometheus.io/path") == "/metrics", where,
            "prometheus.io annotations do not point at the hub's /metrics on the internal port")

    # Drain timing.
    drain = conf.get("drain", {})
    grace_s = drain.get("grace_ms", 25000) / 1000
    window_s = drain.get("window_ms", 10000) / 1000
    retry_s = drain.get("retry_ms", 5000) / 1000
    pre_stop = ctr.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    tgps = spec.get("terminationGracePeriodSeconds", 30)
    c.check(tgps >= pre_stop + grace_s + 5, where,
            f"terminationGracePeriodSeconds {tgps} is not above preStop {pre_stop} s + drain.grace_ms "
            f"{grace_s} s + 5 s: the kubelet would kill the hub mid-drain")
    replicas = dep["spec"].get("replicas", 1)
    hpa = r.one("HorizontalPodAutoscaler", HUB)
    if replicas > 1 or hpa:
        need = pre_stop + window_s + retry_s
        c.check(dep["spec"].get("minReadySeconds", 0) >= need, where,
                f"minReadySeconds {dep['spec'].get('minReadySeconds', 0)} < preStop + drain window + "
                f"retry ({need} s): several nodes would drain at once in a rollout")
    ru = dep["spec"].get("strategy", {}).get("rollingUpdate", {})
    c.check(ru.get("maxUnavailable") in (0, "0%"), where, "rollingUpdate.maxUnavailable is not 0")

    # Memory sizing.
    max_conn = conf.get("limits", {}).get("max_connections", 200_000)
    need_mib = (SIZING_BASE_MIB + SIZING_CACHE_MIB + max_conn * SIZING_PER_CONN_KIB / 1024) * SIZING_HEADROOM
    limit = ctr.get("resources", {}).get("limits", {}).get("memory")
    c.check(limit is not None and parse_quantity_mib(limit) >= need_mib, where,
            f"memory limit {limit} is below the sizing for limits.max_connections = {max_conn} "
            f"({need_mib:.0f} MiB, k8s/README.md)")
    c.check("cpu" in ctr.get("resources", {}).get("requests", {}), where,
            "no CPU request: the HorizontalPodAutoscaler needs one")

    # Topology spread over zones and nodes.
    tsc = {t["topologyKey"]: t for t in spec.get("topologySpreadConstraints", [])}
    for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname"):
        t = tsc.get(key)
        if c.check(t is not None, where, f"no topology spread over {key}"):
            c.check(selects(t.get("labelSelector", {}), labels), where,
                    f"topology spread over {key} does not select the hub pods")
    if expect.get("zone_strict"):
        c.check(tsc.get("topology.kubernetes.io/zone", {}).get("whenUnsatisfiable") == "DoNotSchedule",
                where, "zone spread is not DoNotSchedule")

    # Service, PDB, HPA.
    svc = r.one("Service", HUB)
    public_svc_ports: set = set()
    if c.check(svc is not None, r.name, f"Service {HUB}"):
        c.check(selects({"matchLabels": svc["spec"]["selector"]}, labels), r.name,
                "Service selector does not match the hub pods")
        for p in svc["spec"]["ports"]:
            tp = p.get("targetPort", p["port"])
            c.check(tp in (port, iport) or tp in port_names | iport_names, r.name,
                    f"Service port {p.get('name')} targets {tp}, neither the hub port nor the internal one")
        public_svc_ports = {sp.get("name") for sp in svc["spec"]["ports"]
                            if sp.get("targetPort", sp["port"]) in ({port} | port_names)} | {
            sp["port"] for sp in svc["spec"]["ports"] if sp.get("targetPort", sp["port"]) in ({port} | port_names)}
    pdb = r.one("PodDisruptionBudget", HUB)
    if c.check(pdb is not None, r.name, f"PodDisruptionBudget {HUB}"):
        c.check(selects(pdb["spec"]["selector"], labels), r.name, "PDB selector does not match the hub pods")
    if expect.get("hpa"):
        if c.check(hpa is not None, r.name, f"HorizontalPodAutoscaler {HUB}"):
            ref = hpa["spec"]["scaleTargetRef"]
            c.check(ref["kind"] == "Deployment" and ref["name"] == HUB, r.name, "HPA does not scale the hub")
            c.check(any(m.get("resource", {}).get("name") == "cpu" for m in hpa["spec"].get("metrics", [])),
                    r.name, "HPA does not scale on CPU")
            c.check(hpa["spec"].get("minReplicas", 1) >= expect.get("hpa_min", 1), r.name,
                    f"HPA minReplicas below {expect.get('hpa_min')}")
    else:
        c.check(hpa is None, r.name, "unexpected HorizontalPodAutoscaler")
    if "replicas_exact" in expect:
        c.check(replicas == expect["replicas_exact"], where, f"replicas {replicas} != {expect['replicas_exact']}")
    if "replicas_min" in expect:
        c.check(replicas >= expect["replicas_min"], where, f"replicas {replicas} < {expect['replicas_min']}")

    # Bus and NetworkPolicy.
    bus = conf.get("bus", {})
    c.check(bus.get("replicas", 1) == expect.get("bus_replicas"), where,
            f"bus.replicas = {bus.get('replicas', 1)}, expected {expect.get('bus_replicas')}")
    url = urlparse(bus.get("url", "").split(",")[0])
    c.check(url.scheme in ("nats", "tls") and url.hostname, where,
            f"bus.url {bus.get('url')!r} is not a nats:// or tls:// URL")
    nats_port = url.port or 4222
    np = r.one("NetworkPolicy", HUB)
    if not c.check(np is not None, r.name, f"NetworkPolicy {HUB}"):
        return
    nps = np["spec"]
    c.check(selects(nps["podSelector"], labels), r.name, "NetworkPolicy does not select the hub pods")
    c.check(set(nps.get("policyTypes", [])) == {"Ingress", "Egress"}, r.name,
            "NetworkPolicy does not restrict both ingress and egress")
    in_ports = {p.get("port") for rule in nps.get("ingress", []) for p in rule.get("ports", [])}
    c.check(in_ports and all(p in (port, iport) or p in port_names | iport_names for p in in_ports)
            and all(rule.get("ports") for rule in nps.get("ingress", [])), r.name,
            f"NetworkPolicy ingress allows {in_ports or 'all ports'}, not only the hub's ports {port} and {iport}")
    # The internal port (/metrics, /v1/publish) is never open to everyone.
    for rule in nps.get("ingress", []):
        if any(p.get("port") == iport or p.get("port") in iport_names for p in rule.get("ports", [])):
            c.check(bool(rule.get("from")), r.name,
                    "NetworkPolicy opens the internal port to every source: name the scrapers in `from`")
    nats_rules = [rule for rule in nps.get("egress", [])
                  if any(p.get("port") == nats_port for p in rule.get("ports", []))]
    dns_rules = [rule for rule in nps.get("egress", [])
                 if any(p.get("port") == 53 and p.get("protocol", "TCP") == "UDP" for p in rule.get("ports", []))]
    c.check(len(nats_rules) == 1 and len(dns_rules) == 1 and len(nps.get("egress", [])) == 2, r.name,
            f"NetworkPolicy egress must be exactly NATS on {nats_port} and DNS on 53")
    c.check(all(rule.get("to") for rule in nps.get("egress", [])), r.name,
            "a NetworkPolicy egress rule has no destination (allows every address)")

    # When NATS is part of the render (dev), the bus URL and the egress rule
    # must reach it.
    nats_sets = [o for o in r.find("StatefulSet") if o["metadata"]["name"] == url.hostname]
    if expect.get("nats"):
        if c.check(len(nats_sets) == 1, r.name, f"a NATS StatefulSet named {url.hostname}"):
            sts = nats_sets[0]
            plabels = sts["spec"]["template"]["metadata"]["labels"]
            check_hardened(c, f"{r.name} StatefulSet/{url.hostname}", pod_spec(sts))
            nsvc = r.one("Service", url.hostname)
            c.check(nsvc is not None and selects({"matchLabels": nsvc["spec"]["selector"]}, plabels)
                    and any(p["port"] == nats_port for p in nsvc["spec"]["ports"]), r.name,
                    f"no Service {url.hostname}:{nats_port} selecting the NATS pods (bus.url)")
            peers = [peer for rule in nats_rules for peer in rule.get("to", [])]
            c.check(any("podSelector" in p and "namespaceSelector" not in p and selects(p["podSelector"], plabels)
                        for p in peers), r.name, "NetworkPolicy egress to NATS does not select the NATS pods")
            nats_ctr = pod_spec(sts)["containers"][0]
            c.check("--jetstream" in nats_ctr.get("args", []) or "-js" in nats_ctr.get("args", []), r.name,
                    "NATS runs without JetStream")
            c.check(version_tuple(nats_ctr["image"].rsplit(":", 1)[1]) >= (2, 11), r.name,
                    "NATS image older than 2.11 (the hub refuses it)")
    elif "nats" in expect:
        c.check(not nats_sets, r.name, "prod must not carry the dev NATS (it comes from the Helm chart)")
    check_bus_security(c, r, conf, cm_name, ctr, spec, labels, url, nats_port, nats_sets)

    # Optional components.
    ing = r.one("Ingress", HUB)
    if expect.get("ingress") and c.check(ing is not None, r.name, f"Ingress {HUB}"):
        a = ing["metadata"].get("annotations", {})
        hb = conf.get("heartbeat_ms", 25000) / 1000
        for k in ("proxy-read-timeout", "proxy-send-timeout"):
            v = a.get(f"nginx.ingress.kubernetes.io/{k}")
            c.check(v is not None and int(v) >= 2 * hb, r.name,
                    f"ingress {k} = {v}: must be at least twice heartbeat_ms ({2 * hb:.0f} s)")
        for rule in ing["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                be = p["backend"]["service"]
                c.check(be["name"] == HUB and svc is not None
                        and any(sp.get("name") == be["port"].get("name") or sp["port"] == be["port"].get("number")
                                for sp in svc["spec"]["ports"]), r.name,
                        f"ingress path {p['path']} does not reach a port of Service {HUB}")
                c.check(svc is not None and (be["port"].get("name") in public_svc_ports
                                             or be["port"].get("number") in public_svc_ports), r.name,
                        f"ingress path {p['path']} reaches the internal port: only the public one is for fans")
        c.check(any(p["path"] == "/v1/ws" for rule in ing["spec"]["rules"] for p in rule["http"]["paths"]),
                r.name, "ingress does not route /v1/ws")
    sm = r.one("ServiceMonitor", HUB)
    if expect.get("service_monitor") and c.check(sm is not None, r.name, f"ServiceMonitor {HUB}"):
        c.check(svc is not None and selects(sm["spec"]["selector"], svc["metadata"].get("labels", {})), r.name,
                "ServiceMonitor does not select the hub Service (by its labels)")
        for ep in sm["spec"]["endpoints"]:
            c.check(any(sp.get("name") == ep.get("port") for sp in svc["spec"]["ports"]), r.name,
                    f"ServiceMonitor port {ep.get('port')} is not a named port of the Service")
            c.check(ep.get("path", "/metrics") == "/metrics", r.name, "ServiceMonitor path is not /metrics")


def secret_env(ctr: dict, name: str) -> str | None:
    """The Secret an environment variable of `ctr` comes from; None when it
    is absent or a literal."""
    for e in ctr.get("env", []):
        if e["name"] == name:
            return e.get("valueFrom", {}).get("secretKeyRef", {}).get("name")
    return None


def env_value(ctr: dict, name: str) -> str | None:
    return next((e.get("value") for e in ctr.get("env", []) if e["name"] == name), None)


def mounted_secret(spec: dict, ctr: dict, path: str) -> str | None:
    """The Secret mounted in `ctr` at the directory holding `path`."""
    directory = path.rsplit("/", 1)[0]
    mount = next((m for m in ctr.get("volumeMounts", []) if m["mountPath"] == directory), None)
    vol = next((v for v in spec.get("volumes", []) if mount and v["name"] == mount["name"]), None)
    return (vol or {}).get("secret", {}).get("secretName")


def check_bus_security(c: Checker, r: Render, conf: dict, cm_name: str, ctr: dict, spec: dict,
                       labels: dict, url, nats_port: int, nats_sets: list) -> None:
    """Least privilege on the bus (issue 13): hubs as the hub user with their
    password and the statistics key from Secrets, the stream declared by a
    Job as the stream administrator, TLS with a mounted CA where the URL asks
    for it, a NetworkPolicy admitting only hubs, the Job, editors and NATS
    peers to the NATS pods, and a dev NATS that runs with the shipped users."""
    where = f"{r.name} Deployment/{HUB}"
    bus = conf.get("bus", {})
    c.check(bus.get("user") == "hub", where, "bus.user is not the hub user of nats/least-privilege.conf")
    c.check(bus.get("manage_stream", True) is False, where,
            "bus.manage_stream is not false: the stream is declared by the Job, hubs may not change it")
    for key in ("password", "token"):
        c.check(key not in bus, where, f"bus.{key} is a literal in the ConfigMap: it belongs in a Secret")
    c.check("key" not in conf.get("stats", {}), where, "stats.key is a literal in the ConfigMap")
    c.check(secret_env(ctr, "TRIBUNE_BUS__PASSWORD") is not None, where,
            "TRIBUNE_BUS__PASSWORD does not come from a Secret")
    c.check(secret_env(ctr, "TRIBUNE_STATS__KEY") is not None, where,
            "TRIBUNE_STATS__KEY does not come from a Secret: hubs could not seal their statistics")
    tls = url.scheme == "tls"

    def check_tls(what: str, pod: dict, container: dict) -> None:
        ca = env_value(container, "TRIBUNE_BUS__TLS_CA_FILE")
        if c.check(ca is not None, what, "bus.url is tls:// but TRIBUNE_BUS__TLS_CA_FILE is not set"):
            c.check(mounted_secret(pod, container, ca) is not None, what,
                    f"{ca} is not in a mounted Secret (the CA of the NATS servers)")

    if tls:
        c.check(bus.get("tls_required") is True, where, "bus.url is tls:// but bus.tls_required is not true")
        check_tls(where, spec, ctr)

    job = r.one("Job", STREAM_JOB)
    jwhere = f"{r.name} Job/{STREAM_JOB}"
    if c.check(job is not None, r.name, f"Job {STREAM_JOB} declaring the stream"):
        jspec = pod_spec(job)
        check_hardened(c, jwhere, jspec)
        jctr = jspec["containers"][0]
        args = jctr.get("args", [])
        c.check("--provision-stream" in args, jwhere, "does not run tribune-hub --provision-stream")
        cfg = args[args.index("--config") + 1] if "--config" in args else ""
        jmount = next((m for m in jctr.get("volumeMounts", []) if m["mountPath"] == cfg.rsplit("/", 1)[0]), None)
        jvol = next((v for v in jspec.get("volumes", []) if jmount and v["name"] == jmount["name"]), None)
        c.check((jvol or {}).get("configMap", {}).get("name") == cm_name, jwhere,
                "does not read the hubs' own tribune.toml (one definition of the stream)")
        c.check(env_value(jctr, "TRIBUNE_BUS__USER") == "stream-admin", jwhere,
                "does not run as the stream administrator")
        c.check(secret_env(jctr, "TRIBUNE_BUS__PASSWORD") is not None, jwhere,
                "TRIBUNE_BUS__PASSWORD does not come from a Secret")
        if tls:
            check_tls(jwhere, jspec, jctr)

    np = r.one("NetworkPolicy", "nats")
    nwhere = f"{r.name} NetworkPolicy/nats"
    if c.check(np is not None, r.name, "NetworkPolicy nats admitting only the bus's clients to NATS"):
        nps = np["spec"]
        c.check(selects(nps["podSelector"], NATS_LABELS), nwhere, "does not select the NATS pods")
        c.check("Ingress" in nps.get("policyTypes", []), nwhere, "does not restrict ingress")
        job_labels = pod_spec_labels(job) if job else {}
        allowed = [labels, job_labels, NATS_LABELS]
        for rule in nps.get("ingress", []):
            peers = rule.get("from", [])
            c.check(bool(peers) and bool(rule.get("ports")), nwhere,
                    "an ingress rule without `from` or ports admits every workload of the cluster")
            for peer in peers:
                ok = ("ipBlock" not in peer and
                      (("podSelector" in peer and "namespaceSelector" not in peer
                        and any(selects(peer["podSelector"], l) for l in allowed if l))
                       or ("namespaceSelector" in peer and "podSelector" not in peer
                           and peer["namespaceSelector"].get("matchLabels"))))
                c.check(bool(ok), nwhere, f"admits {peer}: only hubs, the stream Job, a named namespace "
                                          "(editors, monitoring) and NATS peers")

        def admits(pod_labels: dict) -> bool:
            return any(any(p.get("port") == nats_port for p in rule.get("ports", []))
                       and any("podSelector" in peer and selects(peer["podSelector"], pod_labels)
                               for peer in rule.get("from", []))
                       for rule in nps.get("ingress", []))
        c.check(admits(labels), nwhere, f"does not admit the hubs on {nats_port}")
        c.check(bool(job_labels) and admits(job_labels), nwhere, f"does not admit the stream Job on {nats_port}")

    if nats_sets:
        sts = nats_sets[0]
        swhere = f"{r.name} StatefulSet/{sts['metadata']['name']}"
        sspec = pod_spec(sts)
        nctr = sspec["containers"][0]
        conf_arg = next((a.split("=", 1)[1] for a in nctr.get("args", []) if a.startswith("--config=")), None)
        if c.check(conf_arg is not None, swhere, "NATS runs without a configuration file: no users, no auth"):
            mount = next((m for m in nctr.get("volumeMounts", []) if m["mountPath"] == conf_arg.rsplit("/", 1)[0]),
                         None)
            vol = next((v for v in sspec.get("volumes", []) if mount and v["name"] == mount["name"]), None)
            cm = r.one("ConfigMap", (vol or {}).get("configMap", {}).get("name", ""))
            data = (cm or {}).get("data", {})
            main = data.get(conf_arg.rsplit("/", 1)[1], "")
            c.check(f"include ./{LEAST_PRIVILEGE}" in main, swhere,
                    f"the NATS configuration does not include ./{LEAST_PRIVILEGE}")
            c.check(data.get(LEAST_PRIVILEGE) == SHIPPED_LEAST_PRIVILEGE, swhere,
                    f"the mounted {LEAST_PRIVILEGE} is not nats/{LEAST_PRIVILEGE}")
        for var, secret in NATS_PASSWORDS.items():
            c.check(secret_env(nctr, var) == secret, swhere, f"{var} does not come from the Secret {secret}")


def pod_spec_labels(obj: dict) -> dict:
    return obj["spec"]["template"]["metadata"].get("labels", {})


def check_least_privilege_file(c: Checker, repo: Path) -> None:
    """nats/least-privilege.conf: users with passwords from the environment
    only, and nobody allowed to publish to tribune.live.>."""
    where = f"nats/{LEAST_PRIVILEGE}"
    text = SHIPPED_LEAST_PRIVILEGE
    c.check("authorization" in text and "users" in text, where, "no users: a NATS without auth")
    passwords = re.findall(r"password\s*=\s*(\S+)", text)
    c.check(bool(passwords) and all(p.startswith("$") for p in passwords), where,
            "a password is written in the file: it must come from the environment ($VAR)")
    c.check(sorted(p.lstrip("$").rstrip(",") for p in passwords) == sorted(NATS_PASSWORDS), where,
            f"the passwords are not {sorted(NATS_PASSWORDS)}")
    allows = " ".join(re.findall(r"allow\s*=\s*\[([^\]]*)\]", text))
    c.check("tribune.live" not in allows and '">"' not in allows, where,
            "a role may publish or subscribe everything, or publish to tribune.live.>")


def check_nats_values(c: Checker, k8s: Path, v: dict) -> None:
    """The Helm values run NATS with the shipped users, TLS, and no nats-box."""
    where = "nats/values.yaml"
    cfg = v.get("config", {})
    include = cfg.get("merge", {}).get("$include")
    c.check(include == LEAST_PRIVILEGE, where, f"config.merge does not $include {LEAST_PRIVILEGE}: NATS without auth")
    data = v.get("configMap", {}).get("merge", {}).get("data", {})
    c.check(data.get(LEAST_PRIVILEGE) == SHIPPED_LEAST_PRIVILEGE, where,
            f"configMap.merge.data.{LEAST_PRIVILEGE} is not a verbatim copy of nats/{LEAST_PRIVILEGE}")
    env = v.get("container", {}).get("env", {})
    for var, secret in NATS_PASSWORDS.items():
        ref = env.get(var, {})
        c.check(isinstance(ref, dict) and ref.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == secret,
                where, f"container.env.{var} does not come from the Secret {secret} (no literals)")
    tls = cfg.get("nats", {}).get("tls", {})
    c.check(tls.get("enabled") is True and bool(tls.get("secretName")), where,
            "config.nats.tls is not enabled with a secretName: clients would talk in the clear")
    c.check(v.get("natsBox", {}).get("enabled") is False, where, "nats-box is on in prod")
    dev_copy = (k8s / "overlays/dev" / LEAST_PRIVILEGE).read_text()
    c.check(dev_copy == SHIPPED_LEAST_PRIVILEGE, f"overlays/dev/{LEAST_PRIVILEGE}",
            f"is not a verbatim copy of nats/{LEAST_PRIVILEGE}")


def check_region(c: Checker, r: Render, expect: dict) -> None:
    """A region's hubs carry the region in their node names, and a mirror
    region's hubs and stream Job name the same mirror of the same origin."""
    prefix, mirror = expect.get("node_prefix"), expect.get("mirror")
    if not prefix:
        return
    dep = r.one("Deployment", HUB)
    ctr = next(x for x in dep["spec"]["template"]["spec"]["containers"] if x["name"] == "hub")
    names = [e["name"] for e in ctr.get("env", [])]
    node = env_value(ctr, "TRIBUNE_NODE_NAME") or ""
    c.check(node == f"{prefix}$(POD_NAME)" and names.count("TRIBUNE_NODE_NAME") == 1
            and "POD_NAME" in names and names.index("POD_NAME") < names.index("TRIBUNE_NODE_NAME"),
            r.name, f"TRIBUNE_NODE_NAME is not {prefix}$(POD_NAME) after POD_NAME: node names collide across regions")
    job = r.one("Job", STREAM_JOB)
    for where, obj in ((f"Deployment/{HUB}", dep), (f"Job/{STREAM_JOB}", job)):
        if not c.check(obj is not None, r.name, f"no {where}"):
            continue
        container = obj["spec"]["template"]["spec"]["containers"][0]
        got = tuple(env_value(container, f"TRIBUNE_BUS__{k}") for k in ("STREAM", "MIRROR_OF", "MIRROR_API"))
        want = mirror or (None, None, None)
        c.check(got == want, f"{r.name} {where}", f"stream, mirror_of, mirror_api are {got}, not {want}")


def check_promote(c: Checker, r: Render) -> None:
    """The promotion Job: --promote-region, as the stream administrator, never retried."""
    job = r.one("Job", "tribune-promote-region")
    if not c.check(job is not None, r.name, "no Job tribune-promote-region"):
        return
    spec = job["spec"]["template"]["spec"]
    check_hardened(c, r.name, spec)
    ctr = spec["containers"][0]
    c.check("--promote-region" in ctr.get("args", []), r.name, "the Job does not run --promote-region")
    c.check(job["spec"].get("backoffLimit") == 0, r.name, "a refused promotion must not be retried")
    c.check(env_value(ctr, "TRIBUNE_BUS__USER") == "stream-admin"
            and secret_env(ctr, "TRIBUNE_BUS__PASSWORD") == "tribune-nats-stream-admin",
            r.name, "the Job does not run as stream-admin with its Secret")


def check_region_values(c: Checker, k8s: Path) -> None:
    """The regions' NATS values: a JetStream domain each (the one the mirror
    region's hubs name in bus.mirror_api), the origin accepting leaf nodes
    over verified TLS, the mirror region joining it over TLS."""
    eu = yaml.safe_load((k8s / "nats/values-region-eu.yaml").read_text())["config"]
    us = yaml.safe_load((k8s / "nats/values-region-us.yaml").read_text())["config"]
    domain = lambda cfg: cfg.get("jetstream", {}).get("merge", {}).get("domain")
    c.check(domain(eu) == "eu" and domain(us) == "us", "nats/values-region-*.yaml",
            "the regions' JetStream domains are not eu and us ($JS.eu.API in region-us)")
    leaf = eu.get("leafnodes", {})
    c.check(leaf.get("enabled") is True and leaf.get("tls", {}).get("enabled") is True
            and leaf.get("tls", {}).get("merge", {}).get("verify") is True,
            "nats/values-region-eu.yaml", "the leaf node port is not TLS with verified client certificates")
    region_conf = (k8s.parent / "nats/least-privilege-region.conf").read_text()
    us_values = yaml.safe_load((k8s / "nats/values-region-us.yaml").read_text())
    data = us_values.get("configMap", {}).get("merge", {}).get("data", {})
    c.check(us.get("merge", {}).get("$include") == "least-privilege-region.conf"
            and data.get("least-privilege-region.conf") == region_conf,
            "nats/values-region-us.yaml",
            "does not $include a verbatim copy of nats/least-privilege-region.conf")
    remotes = us.get("leafnodes", {}).get("merge", {}).get("remotes", [])
    c.check(bool(remotes) and all(r.get("tls", {}).get("cert_file") and
                                  all(u.startswith("nats-leaf://") for u in r.get("urls", []))
                                  for r in remotes),
            "nats/values-region-us.yaml", "the leaf node remotes are not TLS with a client certificate")


def check_loadtest(c: Checker, r: Render, services_from: Render | None) -> None:
    job = r.one("Job", "tribune-loadtest")
    if not c.check(job is not None, r.name, "Job tribune-loadtest"):
        return
    where = f"{r.name} Job/tribune-loadtest"
    spec = pod_spec(job)
    check_hardened(c, where, spec)
    c.check(job["spec"].get("backoffLimit") == 0, where, "a failed load test must not be retried")
    c.check(0 < job["spec"].get("activeDeadlineSeconds", 0) <= 3600, where,
            "activeDeadlineSeconds must bound the run (at most an hour)")
    ctr = spec["containers"][0]
    c.check(ctr["image"].split(":")[0].endswith("tribune-loadtest"), where, "image is not tribune-loadtest")
    c.check(bool(ctr.get("args")), where, "no arguments for tribune-loadtest")
    # Service addresses come from service environment variables expanded in
    # the arguments: each must name a Service (and port) the dev overlay has.
    refs = re.findall(r"\$\(([A-Z0-9_]+)_SERVICE_(HOST|PORT_[A-Z0-9_]+|PORT)\)", " ".join(ctr.get("args", [])))
    if refs:
        c.check(spec.get("enableServiceLinks", True) is True, where,
                "arguments use service variables but enableServiceLinks is false")
    if services_from is not None:
        for svc_var, what in refs:
            svc = next((o for o in services_from.find("Service")
                        if o["metadata"]["name"].upper().replace("-", "_") == svc_var), None)
            ok = svc is not None
            if ok and what.startswith("PORT_"):
                port = what[len("PORT_"):].lower().replace("_", "-")
                ok = any(p.get("name") == port for p in svc["spec"]["ports"])
            c.check(ok, where, f"$({svc_var}_SERVICE_{what}) names no Service/port of {services_from.name}")


def check_sources(c: Checker, k8s: Path) -> None:
    base = tomllib.loads((k8s / "base/tribune.toml").read_text())
    prod = tomllib.loads((k8s / "overlays/prod/tribune.toml").read_text())
    fb, fp = flatten(base), flatten(prod)
    changed = {k for k in fb.keys() | fp.keys() if fb.get(k) != fp.get(k)}
    c.check(changed <= PROD_TOML_CHANGES, "overlays/prod/tribune.toml",
            f"differs from base/tribune.toml in {sorted(changed - PROD_TOML_CHANGES)}; only "
            f"{sorted(PROD_TOML_CHANGES)} are prod changes (update the base file, or the list in validate.py)")
    c.check(fp.get("bus.replicas") == 3, "overlays/prod/tribune.toml", "bus.replicas is not 3")

    where = "nats/values.yaml"
    v = yaml.safe_load((k8s / "nats/values.yaml").read_text())
    cfg = v.get("config", {})
    cluster, js = cfg.get("cluster", {}), cfg.get("jetstream", {})
    c.check(cluster.get("enabled") is True and cluster.get("replicas") == 3, where,
            "config.cluster is not enabled with 3 replicas")
    c.check(cluster.get("replicas", 0) >= fp.get("bus.replicas", 1), where,
            "fewer NATS servers than the stream's replicas (bus.replicas in the prod tribune.toml)")
    fs = js.get("fileStore", {})
    c.check(js.get("enabled") is True and fs.get("enabled") is True and fs.get("pvc", {}).get("enabled") is True,
            where, "JetStream file storage on a PVC is not enabled")
    c.check(js.get("memoryStore", {}).get("enabled") is False, where, "memory storage should be off")
    check_nats_values(c, k8s, v)
    check_region_values(c, k8s)
    tag = v.get("container", {}).get("image", {}).get("tag", "")
    c.check(bool(tag) and version_tuple(tag) >= (2, 11), where, f"image tag {tag!r}: nats-server 2.11+ is required")
    grace = v.get("podTemplate", {}).get("terminationGracePeriodSeconds", 60)
    ldm = seconds(cfg.get("lameDuckGracePeriod", "10s")) + seconds(cfg.get("lameDuckDuration", "30s"))
    c.check(grace >= ldm + 20, where,
            f"terminationGracePeriodSeconds {grace} < lame duck {ldm:.0f} s + 20 s (the chart's rule)")
    tsc = v.get("podTemplate", {}).get("topologySpreadConstraints", {})
    c.check("topology.kubernetes.io/zone" in tsc and "kubernetes.io/hostname" in tsc, where,
            "NATS servers are not spread over zones and nodes")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repo", type=Path, required=True)
    ap.add_argument("--k8s-version", action="append", dest="versions")
    ap.add_argument("renders", nargs="+", metavar="NAME=FILE")
    args = ap.parse_args()
    versions = args.versions or ["1.30.0", kv.latest_version()]
    k8s = args.repo / "k8s"
    global SHIPPED_LEAST_PRIVILEGE
    SHIPPED_LEAST_PRIVILEGE = (args.repo / "nats" / LEAST_PRIVILEGE).read_text()

    local = {}
    for f in sorted((k8s / "tools/schemas").glob("*.json")):
        schema = json.loads(f.read_text())
        props = schema["properties"]
        local[(props["apiVersion"]["const"], props["kind"]["const"])] = schema

    c = Checker()
    seen = set()
    renders: dict[str, Render] = {}
    for item in args.renders:
        name, _, file = item.partition("=")
        seen.add(name)
        try:
            r = Render(name, Path(file))
        except yaml.YAMLError as e:
            c.check(False, name, f"rendered YAML does not parse: {e}")
            continue
        renders[name] = r
        c.check(bool(r.objects), name, "renders no objects")
        validate_schemas(c, r, versions, local)
        expect = EXPECT.get(name)
        if not c.check(expect is not None, name, "no expectations in validate.py EXPECT for this render"):
            continue
        if expect.get("promote"):
            check_promote(c, r)
        elif not expect.get("job"):
            check_hub(c, r, expect)
            check_region(c, r, expect)
    # The load test runs beside a deployed overlay: check it against dev's
    # Services (prod's NATS Service comes from the Helm chart, same name).
    for name, expect in EXPECT.items():
        if expect.get("job") and name in renders:
            check_loadtest(c, renders[name], renders.get("overlays/dev"))
    for name in EXPECT:
        c.check(name in seen, name, "expected render missing")
    check_sources(c, k8s)
    check_least_privilege_file(c, args.repo)
    print(f"k8s: {c.passed} passed, {c.failed} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
