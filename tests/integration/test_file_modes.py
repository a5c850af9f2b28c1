"""Files holding payout details are owner-only (0600; 0640 with ``[files] group_readable``) whatever the umask, looser
existing files are tightened, and the one-daemon-per-file lock follows symlinks and refuses hard links."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from cli_helpers import invoke
from sqlalchemy import text

from payhub import files
from payhub.api import Payee, PayoutInstruction
from payhub.builtin.csv_export import CsvExportRail, CsvExportSettings
from payhub.db import migrate
from payhub.db.engine import make_engine
from payhub.errors import PayhubError
from payhub.runtime import Runtime
from payhub.settings import Settings, load_settings
from payhub.worker import Worker

UMASKS = [0o022, 0o002, 0o000]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=UMASKS, ids=[f"umask{u:03o}" for u in UMASKS])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """A permissive umask for the test (restored after), and payhub's default file mode."""
    old = os.umask(request.param)
    files.configure(group_readable=False)
    try:
        yield request.param
    finally:
        os.umask(old)
        files.configure(group_readable=False)


def config(tmp_path: Path, body: str = "") -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "payhub.toml"
    path.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "payhub.db"}"\n{body}')
    return path


def instruction(n: int, currency: str = "EUR", **details: str) -> PayoutInstruction:
    payee = Payee(f"p{n}", f"Partner {n}", country="DE" if currency == "EUR" else "US", email=f"p{n}@example.com",
                  details=details)
    return PayoutInstruction(n, f"ph-{n:032x}", payee, Decimal("10.00"), currency, f"payout {n}", datetime.now(UTC))


# ------------------------------------------------------------------------------------------------- database


def test_database_wal_and_shm_are_owner_only(tmp_path: Path, umask: int) -> None:
    assert invoke("-c", str(config(tmp_path)), "db", "upgrade").exit_code == 0
    db = tmp_path / "payhub.db"
    assert mode(db) == 0o600
    engine = make_engine(f"sqlite:///{db}")
    try:
        with engine.begin() as conn:  # an open WAL database: the -wal and -shm files exist now
            conn.execute(text("CREATE TABLE probe (x INTEGER)"))
            assert {p.name: mode(p) for p in tmp_path.glob("payhub.db*") if not p.name.endswith(".lock")} == {
                "payhub.db": 0o600, "payhub.db-wal": 0o600, "payhub.db-shm": 0o600}
    finally:
        engine.dispose()


def test_group_readable_setting_gives_0640(tmp_path: Path, umask: int) -> None:
    path = config(tmp_path, "[files]\ngroup_readable = true\n")
    assert invoke("-c", str(path), "db", "upgrade").exit_code == 0
    db = tmp_path / "payhub.db"
    engine = make_engine(f"sqlite:///{db}")
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE probe (x INTEGER)"))
            assert mode(db) == mode(Path(f"{db}-wal")) == mode(Path(f"{db}-shm")) == 0o640
    finally:
        engine.dispose()
    settings = load_settings(config(tmp_path / "other"))  # a file without [files]: owner-only again
    assert settings.files.group_readable is False and files.private_file_mode() == 0o600


def test_an_existing_world_readable_database_is_tightened(
    tmp_path: Path, umask: int, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "payhub.db"
    engine = make_engine(f"sqlite:///{db}")
    migrate.upgrade(engine)
    engine.dispose()
    for suffix in ("", "-wal", "-shm"):  # as an older payhub or a copy left them
        Path(f"{db}{suffix}").touch()
        os.chmod(f"{db}{suffix}", 0o666)
    with caplog.at_level(logging.WARNING, logger="payhub.files"):
        result = invoke("-c", str(config(tmp_path)), "db", "status")
    assert result.exit_code == 0, result.output
    assert mode(db) == 0o600
    assert f"{db} had mode 0666, more open than 0600: permissions tightened to 0600" in caplog.text
    for suffix in ("-wal", "-shm"):
        path = Path(f"{db}{suffix}")
        assert not path.exists() or mode(path) == 0o600


def test_tighten_never_adds_bits(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.touch()
    os.chmod(path, 0o400)
    files.tighten(path, 0o640)
    assert mode(path) == 0o400
    os.chmod(path, 0o644)
    files.tighten(path, 0o640)
    assert mode(path) == 0o640


# -------------------------------------------------------------------------------------- files of the rails


def test_csv_export_files_are_owner_only(tmp_path: Path, umask: int) -> None:
    rail = CsvExportRail("c", CsvExportSettings.model_validate({"directory": str(tmp_path / "out")}))
    rail.send([instruction(1, iban="DE89370400440532013000")])
    written = list((tmp_path / "out").iterdir())
    assert len(written) == 1 and mode(written[0]) == 0o600
    files.configure(group_readable=True)
    rail.send([instruction(2, iban="DE89370400440532013000")])
    assert sorted(mode(p) for p in (tmp_path / "out").iterdir()) == [0o600, 0o640]


BANK = {
    "sepa": {"debtor_name": "Acme GmbH", "debtor_iban": "DE89 3704 0044 0532 0130 00", "debtor_bic": "COBADEFFXXX"},
    "ach": {"immediate_destination": "091000019", "immediate_origin": "1234567890", "immediate_origin_name": "Acme",
            "company_id": "1234567890", "company_name": "Acme", "originating_dfi": "091000019"},
}


def bank_rail(tmp_path: Path, **changes: object) -> object:
    from payhub_bank import BankSettings, BankTransferRail

    (tmp_path / "outbox").mkdir(exist_ok=True)
    settings = BankSettings.model_validate({"outbox": "outbox", **BANK, **changes}, context={"base_dir": tmp_path})
    return BankTransferRail("bank", settings)


def bank_files(tmp_path: Path) -> dict[str, int]:
    return {p.name: mode(p) for p in (tmp_path / "outbox").iterdir() if not p.name.startswith(".payhub-bank")}


def test_bank_outbox_files_are_owner_only(tmp_path: Path, umask: int) -> None:
    rail = bank_rail(tmp_path)
    rail.send([instruction(1, iban="FR1420041010050500013M02606", bic="PSSTFRPPXXX"),  # type: ignore[attr-defined]
               instruction(2, "USD", routing_number="021000021", account_number="00001002")])
    written = bank_files(tmp_path)  # a pain.001 and a NACHA file, each with its manifest
    assert sorted(name.split("-", 2)[1] + name.split(".", 1)[1] for name in written) == [
        "achach", "achach.manifest.json", "sctxml", "sctxml.manifest.json"], written
    assert set(written.values()) == {0o600}, written


def test_bank_file_mode_setting_allows_the_group_never_others(tmp_path: Path, umask: int) -> None:
    from pydantic import ValidationError

    rail = bank_rail(tmp_path, file_mode=0o640)
    rail.send([instruction(3, iban="FR1420041010050500013M02606", bic="PSSTFRPPXXX")])  # type: ignore[attr-defined]
    assert set(bank_files(tmp_path).values()) == {0o640}
    for bad in (0o644, 0o666, 0o700, 0o400, 0o4600):
        with pytest.raises(ValidationError, match="others get nothing|less than or equal|greater than or equal"):
            bank_rail(tmp_path, file_mode=bad)


def test_credit_notes_and_their_ledger_are_owner_only(tmp_path: Path, umask: int) -> None:
    from payhub_creditnote.rail import CreditNoteRail, CreditNoteSettings

    seller = {"name": "Vendor GmbH", "country": "DE", "registration_id": "HRB 12345",
              "endpoint_id": "billing@vendor.example", "endpoint_scheme": "EM"}
    settings = CreditNoteSettings.model_validate({
        "outbox": str(tmp_path / "notes"), "seller": seller,
        "tax": {"category": "O", "exemption_reason_code": "VATEX-EU-O"}})
    rail = CreditNoteRail("cn", settings)
    try:
        rail.send([instruction(1)])
        ledger = settings.ledger_path
        assert mode(ledger) == 0o600
        notes = list((tmp_path / "notes").glob("*.xml"))
        assert len(notes) == 1 and mode(notes[0]) == 0o600
        for extra in (Path(f"{ledger}-wal"), Path(f"{ledger}-shm")):
            assert not extra.exists() or mode(extra) == 0o600
    finally:
        rail.close()


def test_giftcard_simulator_state_is_owner_only(tmp_path: Path, umask: int) -> None:
    from payhub_simulators.giftcard import GiftCardSimulator

    state = tmp_path / "giftcard-sim.db"
    simulator = GiftCardSimulator(state_path=state)
    try:
        assert mode(state) == 0o600
        for extra in (Path(f"{state}-wal"), Path(f"{state}-shm")):
            assert not extra.exists() or mode(extra) == 0o600
    finally:
        simulator.stop()


# --------------------------------------------------------------------------------------- one daemon per file


@pytest.fixture
def database(tmp_path: Path) -> Path:
    directory = tmp_path / "real"
    directory.mkdir()
    db = directory / "payhub.db"
    engine = make_engine(f"sqlite:///{db}")
    migrate.upgrade(engine)
    engine.dispose()
    return db


def settings_for(path: Path, where: Path) -> Settings:
    where.mkdir(parents=True, exist_ok=True)
    cfg = where / "payhub.toml"
    cfg.write_text(f'[database]\nurl = "sqlite:///{path}"\n')
    return load_settings(cfg)


def start(path: Path, where: Path) -> Worker:
    worker = Worker(Runtime(settings_for(path, where)))
    worker.start()
    return worker


def test_a_symlink_to_the_database_takes_the_same_lock(tmp_path: Path, database: Path) -> None:
    link_dir = tmp_path / "elsewhere"
    link_dir.mkdir()
    (link_dir / "link.db").symlink_to(database)
    (tmp_path / "dirlink").symlink_to(database.parent, target_is_directory=True)
    first = start(database, tmp_path / "a")
    try:
        for other in (link_dir / "link.db", tmp_path / "dirlink" / "payhub.db"):
            with pytest.raises(PayhubError, match=f"another payhub daemon is running on {database}"):
                start(other, tmp_path / "b")
    finally:
        first.stop()
        first.rt.close()
    second = start(link_dir / "link.db", tmp_path / "b")  # free again once the first has stopped
    second.stop()
    second.rt.close()


def test_a_hard_linked_database_is_refused(tmp_path: Path, database: Path) -> None:
    first = start(database, tmp_path / "a")
    try:
        os.link(database, tmp_path / "hard.db")
        with pytest.raises(PayhubError, match="has 2 hard links"):
            start(tmp_path / "hard.db", tmp_path / "b")
    finally:
        first.stop()
        first.rt.close()
    with pytest.raises(PayhubError, match="has 2 hard links"):  # neither name, while both exist
        start(database, tmp_path / "a")
    (tmp_path / "hard.db").unlink()
    start(database, tmp_path / "a").stop()


def test_the_daemon_reports_a_second_daemon_through_a_symlink(tmp_path: Path, database: Path) -> None:
    (tmp_path / "link.db").symlink_to(database)
    first = start(database, tmp_path / "a")
    try:
        (tmp_path / "b").mkdir()
        result = invoke("-c", str(config(tmp_path / "b")), "run", "--once",
                        env={"PAYHUB_DATABASE__URL": f"sqlite:///{tmp_path / 'link.db'}"})
        assert result.exit_code == 1
        assert f"another payhub daemon is running on {database}" in result.output
    finally:
        first.stop()
        first.rt.close()
