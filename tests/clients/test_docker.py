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
