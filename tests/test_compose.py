"""docker-compose.yml, checked without a Docker engine: it must match the local stack."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from stepledger import stack
from stepledger.settings import REPO_ROOT, Settings
from stepledger.stack import postgres

COMPOSE = REPO_ROOT / "docker-compose.yml"
POSTGREST_CONF = REPO_ROOT / "deploy" / "postgrest.conf"
NGINX_TEMPLATE = REPO_ROOT / "deploy" / "nginx" / "default.conf.template"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def local_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings.from_env(home=tmp_path_factory.mktemp("compose-home"))


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _bind_sources(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host path, container path) of every bind mount (named volumes skipped)."""
    mounts = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            source, target = volume.get("source", ""), volume.get("target", "")
        else:
            source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append((source, target))
    return mounts


def test_services(compose: dict[str, Any]) -> None:
    assert {"db", "migrate", "postgrest", "web"} <= set(compose["services"])
    services = compose["services"]
    assert services["postgrest"]["image"] == "postgrest/postgrest:v12.0.2"
    assert services["web"]["image"].startswith("nginx:1.25")
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    assert "healthcheck" in services["db"]
    assert services["postgrest"]["depends_on"]["migrate"]["condition"] == \
        "service_completed_successfully"


def test_every_mounted_or_built_path_exists(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for source, _ in _bind_sources(service):
            assert (REPO_ROOT / source).exists(), f"{name} mounts missing {source}"
        build = service.get("build")
        if build is None:
            continue
        context = REPO_ROOT / (build if isinstance(build, str) else build.get("context", "."))
        assert context.is_dir(), f"{name} builds from missing {context}"
        if isinstance(build, dict) and "dockerfile" in build:
            assert (context / build["dockerfile"]).is_file(), f"{name}: no {build['dockerfile']}"
        if isinstance(build, dict) and "dockerfile_inline" in build:
            for line in build["dockerfile_inline"].splitlines():
                if line.strip().startswith("COPY"):
                    for src in line.split()[1:-1]:
                        assert (context / src).exists(), f"{name} copies missing {src}"


def test_postgrest_uses_the_local_stack_config(compose: dict[str, Any],
                                               local_settings: Settings) -> None:
    service = compose["services"]["postgrest"]
    mounts = dict(_bind_sources(service))
    conf_mount = next(t for s, t in mounts.items()
                      if (REPO_ROOT / s).resolve() == POSTGREST_CONF.resolve())
    assert conf_mount in service["command"]
    assert local_settings.postgrest_conf.resolve() == POSTGREST_CONF.resolve()


def test_postgrest_conf_variables_are_supplied_everywhere(compose: dict[str, Any],
                                                          local_settings: Settings) -> None:
    needed = stack.conf_variables(POSTGREST_CONF.read_text())
    assert needed, "postgrest.conf should read its secrets from the environment"
    compose_env = _env(compose["services"]["postgrest"])
    assert needed <= set(compose_env), needed - set(compose_env)
    local_env = stack.postgrest_env(local_settings)
    assert needed <= set(local_env), needed - set(local_env)


def test_nginx_template_variables_are_supplied_everywhere(compose: dict[str, Any],
                                                          local_settings: Settings) -> None:
    service = compose["services"]["web"]
    template_target = dict(_bind_sources(service))["./deploy/nginx/default.conf.template"]
    assert template_target.startswith("/etc/nginx/templates/")
    assert template_target.endswith(".template")
    needed = stack.template_variables(NGINX_TEMPLATE.read_text())
    assert {"STEPLEDGER_WEB_PORT", "STEPLEDGER_API_UPSTREAM", "STEPLEDGER_WEB_ROOT"} <= needed
    compose_env = _env(service)
    assert needed <= set(compose_env), needed - set(compose_env)
    local_env = stack.nginx_env(local_settings)
    assert needed <= set(local_env), needed - set(local_env)
    # The web root the template serves is the directory compose mounts ./web on.
    web_mount = dict(_bind_sources(service))["./web"]
    assert compose_env["STEPLEDGER_WEB_ROOT"] == web_mount
    assert compose_env["STEPLEDGER_API_UPSTREAM"].split(":")[0] == "postgrest"


def test_nginx_template_renders_without_leftovers(local_settings: Settings) -> None:
    rendered = stack.render_template(NGINX_TEMPLATE.read_text(), stack.nginx_env(local_settings))
    code = "\n".join(ln for ln in rendered.splitlines() if not ln.lstrip().startswith("#"))
    assert "${" not in code
    assert "$binary_remote_addr" in code  # nginx's own variables are left alone


def test_compose_holds_no_secret(compose: dict[str, Any]) -> None:
    for service in compose["services"].values():
        for key, value in _env(service).items():
            if re.search(r"PASSWORD|SECRET", key):
                assert value.startswith("${"), f"{key} must come from the environment"
    assert not (REPO_ROOT / ".env").exists() or ".env" in (REPO_ROOT / ".gitignore").read_text()


def test_db_image_carries_pg_jsonschema() -> None:
    dockerfile = (REPO_ROOT / "db" / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=postgres:15\b", dockerfile, re.M)
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", dockerfile, re.M)
    assert "pg_jsonschema" in dockerfile
    for package in ("postgresql-plpython3-", "python3-jsonschema", "python3-fastjsonschema",
                    "python3-regex"):
        assert package in dockerfile


def test_background_work_runs_beside_the_servers(compose: dict[str, Any]) -> None:
    """What `stepledger up` runs beside the servers runs in compose too: the scheduler (refreshes,
    partitions, BI watchdog, stall scan, invoice PDFs) and the notification worker, from the
    migrate service's image and settings, once the schema is migrated."""
    services = compose["services"]
    commands = {name: services[name]["command"] for name in ("scheduler", "notify")}
    assert commands == {"scheduler": ["stepledger", "scheduler", "run"],
                        "notify": ["stepledger", "notify", "run"]}
    migrate_env = _env(services["migrate"])
    for name in commands:
        service = services[name]
        assert service["build"] == services["migrate"]["build"]
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert service["restart"] == "unless-stopped"
        assert migrate_env.items() <= _env(service).items()


def test_the_app_image_has_the_libraries_bootstrap_installs_for_pdfs(
        compose: dict[str, Any]) -> None:
    """Invoice PDFs render in the scheduler: its image installs the same Debian libraries for
    WeasyPrint as scripts/bootstrap.sh does for the local stack."""
    bootstrap = (REPO_ROOT / "scripts" / "bootstrap.sh").read_text()
    line = next(x for x in bootstrap.splitlines() if "libpango" in x)
    wanted = set(re.findall(r"[a-z0-9][a-z0-9.+-]+", line.split("(", 1)[1].split(")", 1)[0]))
    assert wanted and "libpango-1.0-0" in wanted
    dockerfile = compose["services"]["migrate"]["build"]["dockerfile_inline"]
    installed = set(re.findall(r"[a-z0-9][a-z0-9.+-]+", dockerfile.split("apt-get install", 1)[1]
                               .split("&&", 1)[0]))
    assert wanted <= installed


def test_the_app_image_installs_the_operator_extra(compose: dict[str, Any]) -> None:
    """The image runs the command line (migrate, scheduler, notify): the base install is only the
    pipeline SDK, so it must install the `operator` extra, as scripts/bootstrap.sh does."""
    dockerfile = compose["services"]["migrate"]["build"]["dockerfile_inline"]
    installs = [line for line in dockerfile.splitlines() if "pip install" in line]
    assert installs and all(re.search(r"""['"]?\.\[([a-z,]*\b)?operator\b""", line)
                            for line in installs), installs
    assert '".[operator]"' in (REPO_ROOT / "scripts" / "bootstrap.sh").read_text()


CITUS_NODES = ("citus-coordinator", "citus-worker-1", "citus-worker-2")


def test_the_citus_profile_builds_every_node_from_the_citus_image(
        compose: dict[str, Any]) -> None:
    """Coordinator and workers: the database image (same Dockerfile, same extensions) on the
    citusdata/citus image for PostgreSQL 15, Citus preloaded with the local cluster's shard count,
    only in the citus profile; the single-node services stay outside any profile."""
    services = compose["services"]
    for name in CITUS_NODES:
        node = services[name]
        assert node["profiles"] == ["citus"]
        assert node["build"]["dockerfile"] == "db/Dockerfile"
        base = node["build"]["args"]["BASE_IMAGE"]
        assert re.fullmatch(r"\$\{STEPLEDGER_CITUS_IMAGE:-citusdata/citus:13\.2\.\d+-pg15\}", base)
        command = " ".join(node["command"])
        assert "shared_preload_libraries=citus" in command
        assert f"citus.shard_count={postgres.CITUS_SHARD_COUNT}" in command
        assert "jit=off" in command
        assert node["environment"]["POSTGRES_DB"] == services["db"]["environment"]["POSTGRES_DB"]
        assert "healthcheck" in node
    for name in ("db", "migrate", "postgrest", "web", "scheduler", "notify"):
        assert "profiles" not in services[name], name
    # the workers are reached only by the coordinator: no published port
    assert "ports" not in services["citus-worker-1"] and "ports" not in services["citus-worker-2"]
    assert services["citus-coordinator"]["ports"]


def test_the_citus_profile_joins_the_workers_before_migrating(compose: dict[str, Any]) -> None:
    services = compose["services"]
    join = services["citus-join"]
    assert join["profiles"] == ["citus"]
    statements = " ".join(join["command"])
    assert "citus_set_coordinator_host('citus-coordinator', 5432)" in statements
    for worker in ("citus-worker-1", "citus-worker-2"):
        assert f"citus_add_node('{worker}', 5432)" in statements
        assert join["depends_on"][worker]["condition"] == "service_healthy"
    needs = services["migrate"]["depends_on"]
    assert needs["citus-join"] == {"condition": "service_completed_successfully",
                                   "required": False}
    assert needs["db"]["required"] is False
    # every service that connects to the database follows STEPLEDGER_DB_HOST
    assert _env(services["migrate"])["STEPLEDGER_PG_HOST"] == "${STEPLEDGER_DB_HOST:-db}"
    for name in ("scheduler", "notify"):
        assert _env(services[name])["STEPLEDGER_PG_HOST"] == "${STEPLEDGER_DB_HOST:-db}"
    assert "@${STEPLEDGER_DB_HOST:-db}:5432/" in _env(services["postgrest"])["STEPLEDGER_DB_URI"]
    for volume in ("citus-coordinator-data", "citus-worker-1-data", "citus-worker-2-data"):
        assert volume in compose["volumes"]
