"""`pledgewatch users|api-keys` against a real PostgreSQL: secrets printed once and stored only as
hashes, a revoked key and a disabled user refused by the API, and bad arguments refused clearly."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from pledgewatch.http import create_app
from pledgewatch.settings import Settings
from tests.integration.test_cli import DUMMY_MQTT, ROOT, output, pledgewatch
from tests.integration.test_lending_cli import PORTFOLIO, ok, refused

pytestmark = pytest.mark.integration

PASSWORD = "a long enough password"


def with_stdin(url: str, state: Path, stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLEDGEWATCH_")}
    env.update(PLEDGEWATCH_DATABASE_URL=url, PLEDGEWATCH_MQTT_URL=DUMMY_MQTT,
               PLEDGEWATCH_STATE_DIR=str(state))
    return subprocess.run([sys.executable, "-m", "pledgewatch", *args], env=env, cwd=ROOT,
                          input=stdin, capture_output=True, text=True, timeout=60, check=False)


def test_users_and_keys_from_the_command_line(migrated_db: str, tmp_path: Path) -> None:
    ok(pledgewatch(migrated_db, tmp_path, "portfolio", "load", str(PORTFOLIO)))
    ok(with_stdin(migrated_db, tmp_path, PASSWORD + "\n", "users", "add", "olga", "--role",
                  "officer", "--password-stdin"))
    generated = ok(pledgewatch(migrated_db, tmp_path, "users", "add", "root", "--role", "admin",
                               "--generate"))
    admin_password = re.search(r"password: (\S+)", generated)
    assert admin_password is not None
    issued = ok(pledgewatch(migrated_db, tmp_path, "api-keys", "issue", "sup-grain", "--name",
                            "grain ERP"))
    key_match = re.search(r"api key: (pwk_\S+)", issued)
    key_id_match = re.search(r"key (\w+) for borrower sup-grain", issued)
    assert key_match and key_id_match
    key, key_id = key_match.group(1), key_id_match.group(1)

    with psycopg.connect(migrated_db) as conn:
        stored = conn.execute("SELECT password_hash FROM users WHERE username = 'olga'").fetchone()
        digest = conn.execute("SELECT key_sha256 FROM api_keys WHERE key_id = %s",
                              (key_id,)).fetchone()
    assert stored is not None and stored[0].startswith("$argon2") and PASSWORD not in stored[0]
    assert digest is not None and bytes(digest[0]) == hashlib.sha256(key.encode()).digest()
    listing = ok(pledgewatch(migrated_db, tmp_path, "api-keys", "list"))
    assert key_id in listing and key not in listing and "active" in listing
    assert "olga" in ok(pledgewatch(migrated_db, tmp_path, "users", "list"))

    settings = Settings(state_dir=tmp_path / "api", jwt_secret="t" * 40, auth_cache_s=0)  # type: ignore[arg-type]
    with TestClient(create_app(migrated_db, settings=settings, live=False)) as api:
        token = api.post("/api/v1/auth/token", data={"username": "olga", "password": PASSWORD})
        assert token.status_code == 200, token.text
        bearer = {"Authorization": f"Bearer {token.json()['access_token']}"}
        assert api.get("/api/v1/auth/me", headers=bearer).json()["role"] == "officer"
        assert api.get("/api/v1/facilities/fac-grain", headers={"X-API-Key": key}).status_code == 200
        assert api.get("/api/v1/facilities/fac-metal", headers={"X-API-Key": key}).status_code == 404

        ok(pledgewatch(migrated_db, tmp_path, "api-keys", "revoke", key_id))
        ok(pledgewatch(migrated_db, tmp_path, "users", "disable", "olga"))
        assert api.get("/api/v1/facilities/fac-grain", headers={"X-API-Key": key}).status_code == 401
        assert api.get("/api/v1/auth/me", headers=bearer).status_code == 401
        assert api.post("/api/v1/auth/token",
                        data={"username": "olga", "password": PASSWORD}).status_code == 401
        ok(pledgewatch(migrated_db, tmp_path, "users", "enable", "olga"))
        # enabled again, but the token issued before the disable stays refused: log in afresh
        assert api.get("/api/v1/auth/me", headers=bearer).status_code == 401
        again = api.post("/api/v1/auth/token", data={"username": "olga", "password": PASSWORD})
        fresh = {"Authorization": f"Bearer {again.json()['access_token']}"}
        assert api.get("/api/v1/auth/me", headers=fresh).status_code == 200
        # a new password from the CLI revokes that one too
        ok(with_stdin(migrated_db, tmp_path, "another long pass phrase\n", "users", "password",
                      "olga", "--password-stdin"))
        assert api.get("/api/v1/auth/me", headers=fresh).status_code == 401


def test_bad_account_arguments_are_refused_in_one_line(migrated_db: str, tmp_path: Path) -> None:
    ok(pledgewatch(migrated_db, tmp_path, "portfolio", "load", str(PORTFOLIO)))
    refused(with_stdin(migrated_db, tmp_path, "short\n", "users", "add", "olga",
                       "--password-stdin"), "at least 12 characters", one_line=True)
    refused(with_stdin(migrated_db, tmp_path, "aaaaaaaaaaaa\n", "users", "add", "olga",
                       "--password-stdin"), "too easy to guess", one_line=True)  # the policy
    refused(with_stdin(migrated_db, tmp_path, PASSWORD + "\n", "users", "add", "olga; DROP TABLE",
                       "--password-stdin"), "must be 1-64", one_line=True)
    refused(pledgewatch(migrated_db, tmp_path, "users", "add", "olga", "--role", "root",
                        "--generate"), "--role must be officer or admin", one_line=True)
    ok(with_stdin(migrated_db, tmp_path, PASSWORD + "\n", "users", "add", "olga",
                  "--password-stdin"))
    refused(with_stdin(migrated_db, tmp_path, PASSWORD + "\n", "users", "add", "olga",
                       "--password-stdin"), "already exists", one_line=True)
    refused(pledgewatch(migrated_db, tmp_path, "users", "disable", "nobody"), "no user",
            one_line=True)
    refused(pledgewatch(migrated_db, tmp_path, "api-keys", "issue", "no-such-borrower", "--name",
                        "x"), "no borrower", one_line=True)
    refused(pledgewatch(migrated_db, tmp_path, "api-keys", "revoke", "deadbeef"), "no API key",
            one_line=True)
    text = output(pledgewatch(migrated_db, tmp_path, "api-keys", "issue", "sup-grain", "--name", ""))
    assert "--name must be 1-200 characters" in text
