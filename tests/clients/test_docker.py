"""The docker/ files, checked as far as this machine can without a Docker daemon: the
compose file parses and its services, dependencies, volumes and image agree; the
Dockerfile builds in stages with the release profile, runs as a non-root user and checks
health on the operations listener's /healthz. Building and running the image is not done
here (see the README)."""

import re
from pathlib import Path

import yaml

DOCKER = Path(__file__).resolve().parents[2] / "docker"


def test_compose_services_dependencies_and_volumes_agree():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert {"minio", "bucket", "crawler", "tarn"} <= set(services)
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source in compose["volumes"], f"{name} mounts undeclared {source}"
    # The image Tarn runs is the one the crawler service builds from the Dockerfile.
    assert services["crawler"]["build"]["dockerfile"] == "docker/Dockerfile"
    assert services["tarn"]["image"] == services["crawler"]["image"]
    # Tarn and the crawler definition share the catalog and reach the object store alike.
    assert services["tarn"]["volumes"] == services["crawler"]["volumes"]
    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert services["tarn"]["environment"][key] == services["crawler"]["environment"][key]
    endpoint = services["tarn"]["environment"]["AWS_ENDPOINT_URL"]
    assert endpoint.startswith("http://minio:")
    assert "s3://lake/" in " ".join(services["crawler"]["command"])
    assert "mb --ignore-existing lake/lake" in " ".join(services["bucket"]["command"])


def test_the_cluster_profile_wires_two_front_ends_to_a_shared_catalog_and_workers():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    worker, catalog = services["worker"], services["catalog"]
    fronts = [services["front-1"], services["front-2"]]
    for s in (worker, catalog, services["cluster-crawler"], *fronts):
        assert s["profiles"] == ["cluster"]
    assert worker["deploy"]["replicas"] == 3
    # Each front end finds every worker replica by the service's DNS name, on the port
    # the workers listen on, beyond loopback and with the same token.
    listen = worker["command"][worker["command"].index("--listen") + 1]
    host, port = listen.rsplit(":", 1)
    assert host == "0.0.0.0"
    token = worker["environment"]["TARN_CLUSTER_TOKEN"]
    for front in fronts:
        env = front["environment"]
        assert env["TARN_WORKERS"] == f"dns:worker:{port}"
        assert token and env["TARN_CLUSTER_TOKEN"] == token
        # Workers read the lake as the front ends do.
        for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert worker["environment"][key] == env[key]
        # One catalog in the PostgreSQL service, with its user, password and database.
        url = re.fullmatch(r"postgres://(\w+):(.+)@catalog:5432/(\w+)", env["TARN_CATALOG"])
        assert url, env["TARN_CATALOG"]
        assert url.group(1) == catalog["environment"]["POSTGRES_USER"]
        assert url.group(2) == catalog["environment"]["POSTGRES_PASSWORD"]
        assert url.group(3) == catalog["environment"]["POSTGRES_DB"]
        assert front["depends_on"]["cluster-crawler"]["condition"] == "service_completed_successfully"
    assert services["cluster-crawler"]["depends_on"]["catalog"]["condition"] == "service_healthy"
    assert services["cluster-crawler"]["environment"]["TARN_CATALOG"] == fronts[0]["environment"]["TARN_CATALOG"]
    # Both front ends write new tables to one warehouse in the object store, which both read;
    # each has a data directory (spill) of its own, and distinct ports.
    warehouses = {f["command"][f["command"].index("--warehouse") + 1] for f in fronts}
    assert len(warehouses) == 1 and warehouses.pop().startswith("s3://lake/")
    assert fronts[0]["volumes"] != fronts[1]["volumes"]
    assert fronts[0]["ports"] != fronts[1]["ports"]
    assert "volumes" not in worker


def test_dockerfile_builds_in_stages_and_runs_unprivileged_with_a_health_check():
    text = (DOCKER / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M)
    assert len(stages) == 2 and stages[0][1] == "build"
    assert "cargo build --release --locked --bin tarn" in text
    assert "COPY --from=build" in text
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert user and user[-1] not in ("root", "0")
    http_port = re.search(r"TARN_HTTP_LISTEN=0\.0\.0\.0:(\d+)", text).group(1)
    assert re.search(rf"HEALTHCHECK .*\n?.*http://127\.0\.0\.1:{http_port}/healthz", text)
    exposed = re.search(r"^EXPOSE\s+(.+)$", text, re.M).group(1).split()
    assert http_port in exposed and "50051" in exposed
    assert re.search(r'^VOLUME \["/data"\]', text, re.M)
