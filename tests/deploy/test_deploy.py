"""deploy/: Kubernetes manifests validated offline against the Kubernetes schemas
(kubernetes-validate, strict), the Prometheus operator's resources (CRDs: checked by structure)
and the dashboard ConfigMap checked against the files they come from, the whole base rendered by
`kubectl kustomize` where kubectl is installed, and the Dockerfile and compose file checked for
what the README promises: the image's default command is run here, on the host, against the
files the image copies. No Docker engine or cluster runs here; these are the checks that can run
offline (test_image.py builds and runs the image in Debian chroots, on demand).
"""

import os
import pathlib
import re
import select
import shutil
import subprocess
import tempfile

import kubernetes_validate
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy/k8s/base"
KUBE = "1.30"
# the binary `check` and the image's command run with (TAILOR_BIN: another build of it)
BIN = pathlib.Path(os.environ.get("TAILOR_BIN", ROOT / "target/release/tailor"))
RULES = ROOT / "deploy/prometheus/rules/tailor.rules.yml"
DASHBOARD = ROOT / "deploy/grafana/dashboards/tailor.json"
OPERATOR_GROUP = "monitoring.coreos.com"


def docs(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def kustomization(root=BASE):
    return yaml.safe_load((root / "kustomization.yaml").read_text())


def file_resources():
    """The base's own manifests (a directory in `resources` is another kustomization)."""
    return [p for p in kustomization()["resources"] if (BASE / p).is_file()]


def resources():
    return {p: docs(BASE / p) for p in file_resources()}


def by_kind(kind):
    return [d for ds in resources().values() for d in ds if d["kind"] == kind][0]


def keys_env():
    """Every key keys.env.example names, with a value good for any of them (16+ bytes)."""
    names = re.findall(r"^([A-Z_][A-Z0-9_]*)=", (ROOT / "deploy/k8s/keys.env.example").read_text(), re.M)
    assert names, "keys.env.example names no key"
    return {n: "0123456789abcdef0123-" + n for n in names}


@pytest.mark.parametrize("path", file_resources())
def test_manifest_is_valid(path):
    for d in docs(BASE / path):
        if d["apiVersion"].startswith(OPERATOR_GROUP):
            pytest.skip(f"{d['kind']} is a CRD: checked by the tests of the operator's resources below")
        kubernetes_validate.validate(d, KUBE, strict=True)


def test_kustomization_lists_every_file_and_routes_yaml_loads():
    k = kustomization()
    listed = set(file_resources()) | {f.split("=", 1)[1] for g in k["configMapGenerator"] for f in g["files"]} | {"kustomization.yaml"}
    assert listed == {p.name for p in BASE.iterdir()}, "a manifest is not in kustomization.yaml, or missing"
    assert "../../grafana" in k["resources"], "the dashboard ConfigMap is not in the base"
    out = subprocess.run([str(BIN), "check", "--config", str(BASE / "routes.yaml")],
                         capture_output=True, text=True, env={**os.environ, **keys_env()})
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


def test_prometheusrule_is_generated_from_the_rules_file():
    rule = by_kind("PrometheusRule")
    assert rule["apiVersion"] == f"{OPERATOR_GROUP}/v1"
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    # byte for byte what the script writes now: edit the rules, forget the script, and this fails
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "prometheusrule.yaml"
        subprocess.run(["sh", str(ROOT / "deploy/k8s/gen-prometheusrule.sh"), str(out)], check=True)
        assert out.read_text() == (BASE / "prometheusrule.yaml").read_text(), \
            "deploy/k8s/base/prometheusrule.yaml is stale: run deploy/k8s/gen-prometheusrule.sh"


def release_patch():
    """The one patch that labels the operator's resources for kube-prometheus-stack."""
    patches = [p for p in kustomization().get("patches", []) if p.get("target", {}).get("group") == OPERATOR_GROUP]
    assert len(patches) == 1, "one patch labels the ServiceMonitor and the PrometheusRule"
    assert set(patches[0]["target"]) == {"group"}, "every kind of the operator's group, no other filter"
    return patches[0]


def test_release_label_is_set_in_one_place():
    release = yaml.safe_load(release_patch()["patch"])["metadata"]["labels"]["release"]
    assert release
    # nowhere else: neither in a manifest nor a second time in the kustomization
    for path in list(BASE.iterdir()) + [ROOT / "deploy/grafana/kustomization.yaml"]:
        n = len(re.findall(r"^\s*release:", path.read_text(), re.M))
        assert n == (1 if path.name == "kustomization.yaml" and path.parent == BASE else 0), path
    assert f"release: {release}" in (ROOT / "README.md").read_text(), "README does not say where to set it"


def test_dashboard_configmap_is_generated_from_the_dashboard_file():
    root = ROOT / "deploy/grafana"
    [gen] = kustomization(root)["configMapGenerator"]
    [src] = gen["files"]
    assert (root / src).resolve() == DASHBOARD.resolve(), "not the file docker compose provisions"
    assert gen["options"]["labels"] == {"grafana_dashboard": "1"}, "kube-prometheus-stack's sidecar label"
    assert gen["options"]["disableNameSuffixHash"] is True, "a hashed name leaves old dashboards behind"


def render():
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl is not installed: the base is not rendered (the checks above still ran)")
    out = subprocess.run([kubectl, "kustomize", str(BASE)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_kustomize_renders_a_valid_base_with_the_monitoring_resources():
    objs = render()
    kinds = sorted(d["kind"] for d in objs)
    assert kinds == sorted(["Namespace", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
                            "ConfigMap", "ConfigMap", "ServiceMonitor", "PrometheusRule"]), kinds
    for d in objs:
        assert d["kind"] == "Namespace" or d["metadata"]["namespace"] == "tailor", d["metadata"]
        if d["apiVersion"].startswith(OPERATOR_GROUP):
            assert d["metadata"]["labels"]["release"], d["kind"]
            assert d["metadata"]["labels"]["app.kubernetes.io/name"] == "tailor", "the patch dropped the labels"
        else:
            assert "release" not in d["metadata"].get("labels", {}), d["kind"]
            kubernetes_validate.validate(d, KUBE, strict=True)
    maps = {d["metadata"]["name"]: d for d in objs if d["kind"] == "ConfigMap"}
    dash = maps["tailor-dashboard"]
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dash["data"] == {"tailor.json": DASHBOARD.read_text()}
    [routes] = [m for n, m in maps.items() if n.startswith("tailor-routes-")]
    assert routes["data"] == {"routes.yaml": (BASE / "routes.yaml").read_text()}
    dep = [d for d in objs if d["kind"] == "Deployment"][0]
    assert dep["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] == routes["metadata"]["name"]
    rule = [d for d in objs if d["kind"] == "PrometheusRule"][0]
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def dockerfile_stages():
    """The Dockerfile's stages, each a list of (instruction, arguments), continuations joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "deploy/Dockerfile").read_text())
    stages = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        op, _, args = line.strip().partition(" ")
        if op.upper() == "FROM":
            stages.append([])
        stages[-1].append((op.upper(), args.strip()))
    return stages


def copies(stage):
    """(source, destination) of the stage's COPY lines that read the build context."""
    out = []
    for op, args in stage:
        if op == "COPY" and not args.startswith("--from"):
            *srcs, dest = args.split()
            out += [(src, dest) for src in srcs]
    return out


def test_dockerfile_is_multistage_nonroot_with_a_healthcheck():
    stages = dockerfile_stages()
    assert len(stages) == 2
    text = (ROOT / "deploy/Dockerfile").read_text()
    user = re.search(r"^USER (\S+)", text, re.M).group(1)
    assert not user.startswith(("root", "0:", "0 ")) and user != "0"
    assert re.search(r"^HEALTHCHECK .*\n?.*9090/healthz", text, re.M)
    for src, _ in copies(stages[0]) + copies(stages[1]):
        assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
    # the build context: the filled-in keys and the build output stay out of it
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"deploy/k8s/keys.env", "target", ".git"} <= set(ignored)
    for src, _ in copies(stages[0]) + copies(stages[1]):
        assert src not in ignored, f"COPY {src}: excluded by .dockerignore"


def test_the_build_stage_copies_a_crate_cargo_accepts():
    # What `cargo build --locked` sees in the build stage: exactly the files COPY brings in. Cargo
    # reads the whole manifest first, so a declared bench that was not copied fails the build;
    # `cargo fetch --locked --offline` reads it the same way without compiling anything.
    [workdir] = [a for op, a in dockerfile_stages()[0] if op == "WORKDIR"]
    with tempfile.TemporaryDirectory() as tmp:
        for src, dest in copies(dockerfile_stages()[0]):
            to = pathlib.Path(tmp) / pathlib.PurePosixPath(workdir, dest).relative_to("/")
            if (ROOT / src).is_dir():
                shutil.copytree(ROOT / src, to)
            else:
                to.mkdir(parents=True, exist_ok=True) if dest.endswith("/") else to.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(ROOT / src, to)
        crate = pathlib.Path(tmp) / workdir.lstrip("/")
        host = re.search(r"^host: (\S+)", subprocess.run(["rustc", "-vV"], capture_output=True, text=True).stdout, re.M).group(1)
        # every locked package in the local cache first, optional ones too (a fresh machine's
        # builds download only the ones they compile, e.g. not mimalloc), so that the offline
        # read below fails only on what the copied files lack
        fetched = subprocess.run(["cargo", "fetch", "--locked", "--target", host], cwd=ROOT,
                                 capture_output=True, text=True)
        assert fetched.returncode == 0, fetched.stderr
        out = subprocess.run(["cargo", "fetch", "--locked", "--offline", "--target", host], cwd=crate,
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        # the build stage runs deploy/bolt.sh, whose first step is that locked build, and the
        # runtime stage copies the binary from where the script writes it
        assert re.search(r"^\s*cargo build --profile dist --locked .*--bin tailor", (ROOT / "deploy/bolt.sh").read_text(), re.M)
        [run] = [a for op, a in dockerfile_stages()[0] if op == "RUN"]
        script, out = run.split()
        assert script == "deploy/bolt.sh"
        [shipped] = [a.split()[1:] for op, a in dockerfile_stages()[1] if op == "COPY" and a.startswith("--from=build")]
        assert shipped == [str(pathlib.PurePosixPath(workdir, out)), "/usr/local/bin/tailor"]
        # what the script reads besides the crate: its helper and the training config
        for needed in ("deploy/procs.sh", "benches/routes.bench.yaml"):
            assert (crate / needed).is_file(), f"the build stage lacks {needed}, which deploy/bolt.sh reads"


def exec_form(stage, op):
    [args] = [a for o, a in stage if o == op]
    return yaml.safe_load(args)  # the JSON array form (a flow sequence)


def test_the_image_starts_with_the_config_baked_into_it():
    # `docker run --env-file deploy/k8s/keys.env tailor`: the default command, no mounted config.
    # Run here as the image would: the files the image copies laid out under a scratch root, the
    # command line unchanged but for the paths (under the scratch root) and the ports (0: free ones).
    runtime = dockerfile_stages()[1]
    baked = dict((dest, src) for src, dest in copies(runtime))
    argv = exec_form(runtime, "ENTRYPOINT") + exec_form(runtime, "CMD")
    assert argv[0] == "tailor" and "serve" in argv
    config = argv[argv.index("--config") + 1]
    assert config in baked, f"the default command reads {config}, which the image does not copy"
    assert "--allow-unauthenticated" not in argv, "the image's default must not spend keys for anyone"
    with tempfile.TemporaryDirectory() as tmp:
        for dest, src in baked.items():
            to = pathlib.Path(tmp) / dest.lstrip("/")
            to.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if (ROOT / src).is_dir() else shutil.copy)(ROOT / src, to)
        local = [str(BIN)] + [str(pathlib.Path(tmp) / a.lstrip("/")) if a in baked else a for a in argv[1:]]
        local = [re.sub(r"^(0\.0\.0\.0|\[::\]):\d+$", r"\1:0", a) for a in local]
        env = {**os.environ, **keys_env()}
        check = subprocess.run([str(BIN), "check", "--config", local[local.index("--config") + 1]],
                               capture_output=True, text=True, env=env)
        assert check.returncode == 0, check.stdout + check.stderr
        proc = subprocess.Popen(local, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp)
        try:
            ready, _, _ = select.select([proc.stdout], [], [], 30)
            assert ready, "no line within 30 s"
            line = proc.stdout.readline()  # the first line, or "" when it exits
            assert line.startswith("tailor listening on http://0.0.0.0:"), line + proc.stderr.read()
        finally:
            proc.terminate()
            proc.wait(timeout=60)


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
