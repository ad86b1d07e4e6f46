"""The Citus topology's settings, without starting anything (runs everywhere, Citus or not)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stepledger import StepledgerError
from stepledger import stack as stack_mod
from stepledger.settings import Settings
from stepledger.stack import citus, postgres


def test_workers_sit_on_the_ports_after_the_coordinator(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPLEDGER_CITUS_WORKERS", "2")
    settings = Settings.from_env(home=tmp_path, pg_port=15540)
    assert settings.citus and not settings.is_worker
    workers = settings.workers
    assert [w.pg_port for w in workers] == [15541, 15542]
    assert [w.pgdata.name for w in workers] == ["pgdata-worker-1", "pgdata-worker-2"]
    assert {w.pgdata.parent for w in workers} == {settings.pgdata.parent}
    assert [w.pg_log.name for w in workers] == ["worker-1.log", "worker-2.log"]
    assert settings.pg_log.name == "postgres.log"
    # every node shares the coordinator's run and log directories and its secrets
    assert {w.run_dir for w in workers} == {settings.run_dir}
    assert {w.secrets_dir for w in workers} == {settings.secrets_dir}
    with pytest.raises(StepledgerError, match="not one of the 2 workers"):
        settings.worker(3)


@pytest.mark.parametrize("value", ["-1", "two"])
def test_a_bad_worker_count_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       value: str) -> None:
    monkeypatch.setenv("STEPLEDGER_CITUS_WORKERS", value)
    with pytest.raises(StepledgerError, match="STEPLEDGER_CITUS_WORKERS"):
        Settings.from_env(home=tmp_path)


def test_unset_or_zero_is_the_single_node(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STEPLEDGER_CITUS_WORKERS", raising=False)
    assert not Settings.from_env(home=tmp_path).citus
    monkeypatch.setenv("STEPLEDGER_CITUS_WORKERS", "0")
    settings = Settings.from_env(home=tmp_path)
    assert not settings.citus and settings.workers == []
    assert "citus" not in postgres.postgres_conf(settings)


def test_the_source_is_looked_for_beside_the_clone(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STEPLEDGER_CITUS_SOURCE", raising=False)
    clone = tmp_path / "clone"
    clone.mkdir()
    assert citus.source_candidates(clone) == [tmp_path / "shared" / "citus"]
    assert citus.source_dir(clone) is None
    (tmp_path / "shared" / "citus").mkdir(parents=True)
    (tmp_path / "shared" / "citus" / citus.CITUS_ARCHIVE).write_bytes(b"")
    assert citus.source_dir(clone) == tmp_path / "shared" / "citus"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / citus.CITUS_ARCHIVE).write_bytes(b"")
    monkeypatch.setenv("STEPLEDGER_CITUS_SOURCE", str(elsewhere))
    assert citus.source_dir(clone) == elsewhere


def test_nodes_trust_only_their_private_socket_directory(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A Citus node trusts local (Unix-socket) connections, TCP stays scram; the same home
    started again as a single node gets scram everywhere back."""
    monkeypatch.setenv("STEPLEDGER_CITUS_WORKERS", "1")
    cluster = Settings.from_env(home=tmp_path, pgdata_override=tmp_path / "pgdata")
    cluster.pgdata.mkdir()
    (cluster.pgdata / "pg_hba.conf").write_text("local all all scram-sha-256\n")
    postgres.write_pg_hba(cluster)
    lines = [ln.split() for ln in (cluster.pgdata / "pg_hba.conf").read_text().splitlines()
             if ln and not ln.startswith("#")]
    assert ["local", "all", "all", "trust"] in lines
    assert all(ln[-1] == "scram-sha-256" for ln in lines if ln[0] == "host")
    assert f"unix_socket_directories = '{cluster.run_dir / 'citus'}'" in \
        postgres.postgres_conf(cluster)
    monkeypatch.setenv("STEPLEDGER_CITUS_WORKERS", "0")
    single = Settings.from_env(home=tmp_path, pgdata_override=tmp_path / "pgdata")
    postgres.write_pg_hba(single)
    text = (single.pgdata / "pg_hba.conf").read_text()
    assert "trust" not in text and "local   all  all                 scram-sha-256" in text


def test_a_citus_home_is_not_started_with_fewer_workers(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPLEDGER_CITUS_WORKERS", "0")
    settings = Settings.from_env(home=tmp_path, pgdata_override=tmp_path / "pgdata")
    for index in (1, 2):
        worker_dir = tmp_path / f"pgdata-worker-{index}"
        worker_dir.mkdir()
        (worker_dir / "PG_VERSION").write_text("15\n")
    with pytest.raises(StepledgerError, match="STEPLEDGER_CITUS_WORKERS=2"):
        stack_mod.start_databases(settings)
    info = stack_mod.status(settings)
    assert [w["node"] for w in info["postgres"]["citus_workers"]] == ["worker-1", "worker-2"]
