"""``payhub config check`` refuses compliance settings that would fail later or cap nothing, naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import invoke

from payhub import signing

GIFTCARD_RAIL = '[rails.g]\nplugin = "giftcard"\n'


def check(tmp_path: Path, body: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    config = tmp_path / "payhub.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "payhub.db"}"\n{body}', encoding="utf-8")
    result = invoke("-c", str(config), "config", "check", env=env or {})
    return result.exit_code, result.stderr


def test_audit_days_without_a_private_checkpoint_key_is_refused(tmp_path: Path) -> None:
    code, stderr = check(tmp_path, "[compliance.retention]\naudit_days = 30\n")
    assert code == 2
    assert "compliance.retention.audit_days: needs audit.checkpoint_key or audit.checkpoint_key_file where " \
           "retention runs" in stderr


def test_audit_days_with_only_the_public_key_is_refused(tmp_path: Path) -> None:
    public = signing.parse_private(signing.new_private_key()[0]).public_text
    code, stderr = check(tmp_path, f'[compliance.retention]\naudit_days = 30\n[audit]\ncheckpoint_public_key = '
                                   f'"{public}"\n')
    assert code == 2 and "compliance.retention.audit_days" in stderr


@pytest.mark.parametrize("where", ["file", "key-file", "environment"])
def test_audit_days_with_a_private_key_passes(tmp_path: Path, where: str) -> None:
    pem = signing.new_private_key()[0]
    (tmp_path / "k.pem").write_text(pem)
    body = "[compliance.retention]\naudit_days = 30\n"
    env = {}
    if where == "file":
        body += "[audit]\ncheckpoint_key_file = \"k.pem\"\n"
    elif where == "key-file":
        body += f"[audit]\ncheckpoint_key_file = \"{tmp_path / 'k.pem'}\"\n"
    else:
        env["PAYHUB_AUDIT__CHECKPOINT_KEY"] = pem
    code, stderr = check(tmp_path, body, env)
    assert code == 0, stderr


def test_events_days_alone_needs_no_key(tmp_path: Path) -> None:
    code, stderr = check(tmp_path, "[compliance.retention]\nevents_days = 30\n")
    assert code == 0, stderr


def test_the_audit_days_check_does_not_stop_other_commands(tmp_path: Path) -> None:
    """A host that does not run retention (the daemon's, an auditor's) may share the file without the key."""
    config = tmp_path / "payhub.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "payhub.db"}"\n[compliance.retention]\n'
                      "audit_days = 30\n", encoding="utf-8")
    result = invoke("-c", str(config), "config", "show")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(("cap", "key", "units"), [
    ('{USD = "600.001"}', "giftcard_yearly_cap.USD", "USD has minor units (2)"),
    ('{JPY = "5000.5"}', "giftcard_yearly_cap.JPY", "JPY has minor units (0)"),
    ('{BHD = "1.0001"}', "giftcard_yearly_cap.BHD", "BHD has minor units (3)"),
])
def test_a_giftcard_cap_finer_than_its_currency_is_refused(tmp_path: Path, cap: str, key: str, units: str) -> None:
    code, stderr = check(tmp_path, GIFTCARD_RAIL + f'[compliance.gifts]\ngiftcard_rails = ["g"]\n'
                                                   f"giftcard_yearly_cap = {cap}\n")
    assert code == 2
    assert f"compliance.gifts.{key}: " in stderr and f"has more decimal places than {units}" in stderr


def test_caps_at_their_currency_precision_pass(tmp_path: Path) -> None:
    code, stderr = check(tmp_path, GIFTCARD_RAIL + '[compliance.gifts]\ngiftcard_rails = ["g"]\n'
                         'giftcard_yearly_cap = {USD = "600.000", JPY = "5000", BHD = "1.001"}\n'
                         '[[compliance.gifts.flag_caps]]\nflag = "gov"\namount = "100.50"\ncurrency = "USD"\n')
    assert "decimal places" not in stderr and "compliance.gifts" not in stderr, stderr


def test_a_flag_cap_finer_than_its_currency_is_refused(tmp_path: Path) -> None:
    code, stderr = check(tmp_path, '[[compliance.gifts.flag_caps]]\nflag = "gov"\namount = "10.001"\n'
                                   'currency = "USD"\n')
    assert code == 2
    assert "compliance.gifts.flag_caps.0.amount: 10.001 has more decimal places than USD" in stderr


@pytest.mark.parametrize("names", ['[""]', '["contact_email", "   "]', '["\\t"]'])
def test_blank_event_attribute_names_are_refused(tmp_path: Path, names: str) -> None:
    code, stderr = check(tmp_path, f"[compliance.erasure]\nevent_attributes = {names}\n")
    assert code == 2
    assert "compliance.erasure.event_attributes" in stderr and "empty or only white space" in stderr


def test_named_event_attributes_pass(tmp_path: Path) -> None:
    code, stderr = check(tmp_path, '[compliance.erasure]\nevent_attributes = ["contact_name", "contact_email"]\n')
    assert code == 0, stderr
