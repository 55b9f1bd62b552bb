#!/usr/bin/env python3
"""agora's own rules for rendered Kubernetes manifests, beyond what the API schemas check.

    k8s_policy.py RENDERED.yaml [--overlay NAME]

Checks, for every Deployment: args `serve --target <t>`, probes of the right kind (gRPC health on
50051 for services, HTTP /healthz for the gateway: one unhealthy upstream must not take the edge out), the hardened security context
(runAsNonRoot, readOnlyRootFilesystem, no privilege escalation, all capabilities dropped, seccomp
RuntimeDefault), resource requests and limits on every container, and a Service, HPA and PDB of
the same name. Once per render: NetworkPolicies for services and gateway, the ConfigMap wiring.
With --overlay: no placeholder Secret rendered, and for prod an image with a pinned tag or digest.
Exit status 1 lists every violation.
"""

import sys

import yaml

TARGETS = ["user", "auth", "post", "notification", "gateway"]
SERVICES = TARGETS[:-1]


def main() -> int:
    args = sys.argv[1:]
    overlay = None
    if "--overlay" in args:
        i = args.index("--overlay")
        overlay = args[i + 1]
        del args[i : i + 2]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    with open(args[0]) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]

    problems = []
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d

    def need(cond, msg):
        if not cond:
            problems.append(msg)

    deployments = by_kind.get("Deployment", {})
    for t in TARGETS:
        name = f"agora-{t}"
        dep = deployments.get(name)
        if dep is None:
            problems.append(f"Deployment {name} missing")
            continue
        for kind in ("Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"):
            need(name in by_kind.get(kind, {}), f"{kind} {name} missing")
        pod = dep["spec"]["template"]["spec"]
        psc = pod.get("securityContext", {})
        need(psc.get("runAsNonRoot") is True, f"{name}: pod runAsNonRoot not true")
        need(
            psc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
            f"{name}: pod seccompProfile not RuntimeDefault",
        )
        containers = pod.get("containers", []) + pod.get("initContainers", [])
        for c in containers:
            cn = f"{name}/{c['name']}"
            sc = c.get("securityContext", {})
            need(sc.get("readOnlyRootFilesystem") is True, f"{cn}: readOnlyRootFilesystem not true")
            need(sc.get("allowPrivilegeEscalation") is False, f"{cn}: allowPrivilegeEscalation not false")
            need(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{cn}: capabilities not drop [ALL]")
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    need(r in res.get(part, {}), f"{cn}: resources.{part}.{r} missing")
            image = c.get("image", "")
            if overlay == "prod":
                pinned = "@sha256:" in image or (":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"))
                need(pinned, f"{cn}: prod image {image!r} is not pinned to a tag or digest")
        main_c = pod["containers"][0]
        need(
            main_c.get("args") == ["serve", "--target", t],
            f"{name}: args {main_c.get('args')} != ['serve', '--target', '{t}']",
        )
        if t == "gateway":
            need(main_c.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/healthz",
                 f"{name}: readinessProbe is not httpGet /healthz")
            need(main_c.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz",
                 f"{name}: livenessProbe is not httpGet /healthz")
        else:
            for probe in ("readinessProbe", "livenessProbe"):
                need(main_c.get(probe, {}).get("grpc", {}).get("port") == 50051,
                     f"{name}: {probe} is not grpc on port 50051")
            inits = pod.get("initContainers", [])
            need(any(i.get("args") == ["migrate", "--target", t] for i in inits),
                 f"{name}: no `agora migrate --target {t}` initContainer")
        if t == "auth":
            mounts = {m["mountPath"] for m in main_c.get("volumeMounts", [])}
            need("/etc/agora/keys" in mounts, f"{name}: signing keys not mounted at /etc/agora/keys")
            env = {e["name"]: e.get("value") for e in main_c.get("env", [])}
            need(env.get("AGORA_AUTH_KEYS_DIR") == "/etc/agora/keys", f"{name}: AGORA_AUTH_KEYS_DIR not /etc/agora/keys")

    netpols = by_kind.get("NetworkPolicy", {})
    need("agora-services" in netpols and "agora-gateway" in netpols, "NetworkPolicies agora-services/agora-gateway missing")

    configmaps = [c for n, c in by_kind.get("ConfigMap", {}).items() if n.startswith("agora-config")]
    if len(configmaps) != 1:
        problems.append(f"expected one agora-config ConfigMap, found {len(configmaps)}")
    else:
        data = configmaps[0].get("data", {})
        for s in SERVICES:
            key = f"AGORA_{s.upper()}_GRPC_URL"
            need(data.get(key) == f"http://agora-{s}:50051", f"ConfigMap {key} is {data.get(key)!r}")
        need(data.get("AGORA_GRPC_ADDR") == "0.0.0.0:50051", "ConfigMap AGORA_GRPC_ADDR not 0.0.0.0:50051")
        need(data.get("AGORA_HTTP_ADDR") == "0.0.0.0:8080", "ConfigMap AGORA_HTTP_ADDR not 0.0.0.0:8080")
        need(data.get("AGORA_LOG_FORMAT") == "json", "ConfigMap AGORA_LOG_FORMAT not json")

    if overlay:
        for name, s in by_kind.get("Secret", {}).items():
            placeholder = s["metadata"].get("annotations", {}).get("agora.dev/placeholder") == "true"
            need(not placeholder, f"overlay {overlay} renders the placeholder Secret {name}")

    if problems:
        for p in problems:
            print(f"policy: {p}", file=sys.stderr)
        return 1
    print(f"policy: {args[0]}: {len(docs)} objects, {len(deployments)} Deployments, all rules hold")
    return 0


if __name__ == "__main__":
    sys.exit(main())
