"""deploy/: Kubernetes manifests validated offline against the Kubernetes schemas
(kubernetes-validate, strict), and the Dockerfile and compose file checked for what the README
promises. No Docker engine or cluster runs here; these are the checks that can run offline.
"""

import os
import pathlib
import re
import subprocess

import kubernetes_validate
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy/k8s/base"
KUBE = "1.30"


def docs(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def kustomization():
    return yaml.safe_load((BASE / "kustomization.yaml").read_text())


def resources():
    return {p: docs(BASE / p) for p in kustomization()["resources"]}


def by_kind(kind):
    return [d for ds in resources().values() for d in ds if d["kind"] == kind][0]


@pytest.mark.parametrize("path", [p for p in yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"]])
def test_manifest_is_valid(path):
    for d in docs(BASE / path):
        if d["apiVersion"].startswith("monitoring.coreos.com"):
            pytest.skip("ServiceMonitor is a CRD: checked by test_servicemonitor_selects_the_service")
        kubernetes_validate.validate(d, KUBE, strict=True)


def test_kustomization_lists_every_file_and_routes_yaml_loads():
    k = kustomization()
    listed = set(k["resources"]) | {f.split("=", 1)[1] for g in k["configMapGenerator"] for f in g["files"]} | {"kustomization.yaml"}
    assert listed == {p.name for p in BASE.iterdir()}, "a manifest is not in kustomization.yaml, or missing"
    out = subprocess.run([str(ROOT / "target/release/tailor"), "check", "--config", str(BASE / "routes.yaml")],
                         capture_output=True, text=True, env={**os.environ, "OPENAI_API_KEY": "x", "TAILOR_CLIENT_KEY": "y",
                              "TAILOR_REQUEST_ID_KEY": "0123456789abcdef0123"})
    assert out.returncode == 0, out.stdout + out.stderr


def test_deployment_is_hardened_probed_and_drains():
    dep = by_kind("Deployment")
    spec = dep["spec"]["template"]["spec"]
    c = spec["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"api": 8080, "admin": 9090}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and {"cpu", "memory"} <= set(c["resources"]["limits"])
    # keys come from a Secret the user creates: the base never ships one (it would overwrite theirs)
    assert c["envFrom"][0]["secretRef"]["name"] == "tailor-keys"
    assert not [d for ds in resources().values() for d in ds if d["kind"] == "Secret"]
    example = (ROOT / "deploy/k8s/keys.env.example").read_text()
    assert "create secret generic tailor-keys --from-env-file=deploy/k8s/keys.env" in example
    assert "/deploy/k8s/keys.env" in (ROOT / ".gitignore").read_text().splitlines()
    assert spec["volumes"][0]["configMap"]["name"] == kustomization()["configMapGenerator"][0]["name"]
    # the grace period covers the preStop sleep plus tailor's drain_timeout
    drain = yaml.safe_load((BASE / "routes.yaml").read_text())["server"]["drain_timeout"]
    drain_s = int(re.fullmatch(r"(\d+)s", drain).group(1))
    pre_stop = int(c["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert spec["terminationGracePeriodSeconds"] > pre_stop + drain_s


def test_hpa_pdb_and_service_point_at_the_deployment():
    dep = by_kind("Deployment")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert by_kind("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert by_kind("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert by_kind("Service")["spec"]["selector"].items() <= labels.items()


def test_servicemonitor_selects_the_service():
    sm = by_kind("ServiceMonitor")
    svc = by_kind("Service")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] in {p["name"] for p in svc["spec"]["ports"]}
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"


def test_dockerfile_is_multistage_nonroot_with_a_healthcheck():
    text = (ROOT / "deploy/Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) == 2
    user = re.search(r"^USER (\S+)", text, re.M).group(1)
    assert not user.startswith(("root", "0:", "0 ")) and user != "0"
    assert re.search(r"^HEALTHCHECK .*\n?.*9090/healthz", text, re.M)
    for src in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
        assert (ROOT / src).exists(), f"COPY {src}: not in the repository"


def test_compose_wires_tailor_prometheus_and_grafana():
    compose = yaml.safe_load((ROOT / "deploy/docker-compose.yml").read_text())
    assert set(compose["services"]) == {"tailor", "redis", "prometheus", "grafana"}
    assert compose["services"]["tailor"]["environment"]["TAILOR_REDIS_URL"] == "redis://redis:6379/0"
    for name, svc in compose["services"].items():
        for v in svc.get("volumes", []):
            src = v.split(":")[0]
            if src in compose.get("volumes", {}):
                continue  # a named volume, not a path
            assert (ROOT / "deploy" / src).resolve().exists(), f"{name}: {src} does not exist"
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    assert prom["scrape_configs"][0]["static_configs"][0]["targets"] == ["tailor:9090"]
    ds = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"
    tailor = compose["services"]["tailor"]
    if "--allow-unauthenticated" in tailor["command"]:
        assert all(p.startswith("127.0.0.1:") for p in tailor["ports"]), "without client keys, publish on loopback only"
    grace = int(tailor["stop_grace_period"].rstrip("s"))
    assert grace > 30, "longer than the default drain_timeout"
