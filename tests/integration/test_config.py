"""Configuration: invalid values stop start-up naming the variable; .env files load as the original's did
(ENV=PRODUCTION → .env.production, ENV=STAGE → .env.stage, else .env) and the real environment wins."""

import os
import re
import subprocess
import tempfile

import pytest

import pstest

INVALID = [
    ("PORT", "abc"),
    ("PORT", "70000"),
    ("EVENT_WORKER_POOL_SIZE", "0"),
    ("EVENT_BUFFERED_CHANNEL_SIZE", "-5"),
    ("DISPATCH_TIMEOUT_MS", "1.5"),
    ("GRPC_MAX_RECV_BYTES", "lots"),
    ("SHUTDOWN_TIMEOUT_MS", "10s"),
    ("PENSTOCK_MODE", "hybrid"),
]


@pytest.mark.parametrize("name,value", INVALID, ids=["%s=%s" % nv for nv in INVALID])
def test_invalid_value_stops_startup(penstock_proc, name, value):
    p = penstock_proc(env={name: value}, wait=False)
    rc = p.wait_exit(10)
    assert rc is not None, "penstock still running 10s after start with %s=%s" % (name, value)
    assert rc != 0, "penstock exited 0 with %s=%s" % (name, value)
    assert name in p.stderr_text(), "stderr does not name %s:\n%s" % (name, p.stderr_tail())


EMBEDDED = {"PENSTOCK_MODE": "embedded", "RABBITMQ_URL": None, "CLICKHOUSE_URL": None}


def test_embedded_mode_with_unusable_data_dir_exits_1(penstock_proc, tmp_path):
    """DATA_DIR that cannot be a directory: a runtime failure (exit 1) naming it, not a hang or a crash."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    p = penstock_proc(env=dict(EMBEDDED, DATA_DIR=str(blocker)), wait=False)
    assert p.wait_exit(10) == 1, p.stderr_tail()
    assert "not-a-dir" in p.stderr_text(), p.stderr_tail()


def test_two_embedded_instances_cannot_share_a_data_dir(penstock_proc, tmp_path):
    """The second penstock on one DATA_DIR exits 1; the first keeps serving."""
    first = penstock_proc(env=dict(EMBEDDED, DATA_DIR=str(tmp_path)))
    second = penstock_proc(env=dict(EMBEDDED, DATA_DIR=str(tmp_path)), wait=False, name="second")
    assert second.wait_exit(10) == 1, second.stderr_tail()
    assert "broker.db" in second.stderr_text() or "lock" in second.stderr_text(), second.stderr_tail()
    assert first.health() == pstest.SERVING
    first.stop()


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def dotenv_case(penstock_proc, db, files, env, expect_port, absent_ports=()):
    with tempfile.TemporaryDirectory(prefix="pstest-dotenv-") as d:
        for name, text in files.items():
            write("%s/%s" % (d, name), text)
        p = penstock_proc(env=env, cwd=d, db=db, wait=False)
        p.wait_serving(30, port=expect_port)
        for other in absent_ports:
            assert not pstest.port_open(other), "also listening on %d" % other
        p.port = expect_port
        p.stop()


def test_dotenv_stage(penstock_proc, db):
    stage, plain = pstest.free_port(), pstest.free_port()
    dotenv_case(penstock_proc, db, {".env.stage": "PORT=%d\n" % stage, ".env": "PORT=%d\n" % plain},
                {"PORT": None, "ENV": "STAGE"}, stage, [plain])


def test_dotenv_production(penstock_proc, db):
    prod, plain = pstest.free_port(), pstest.free_port()
    dotenv_case(penstock_proc, db, {".env.production": "# production settings\nPORT=%d\n" % prod,
                                ".env": "PORT=%d\n" % plain},
                {"PORT": None, "ENV": "PRODUCTION"}, prod, [plain])


def test_dotenv_default(penstock_proc, db):
    plain, stage = pstest.free_port(), pstest.free_port()
    dotenv_case(penstock_proc, db, {".env": "PORT=%d\n" % plain, ".env.stage": "PORT=%d\n" % stage},
                {"PORT": None, "ENV": None}, plain, [stage])


def test_real_env_wins_over_dotenv(penstock_proc, db):
    from_file, from_env = pstest.free_port(), pstest.free_port()
    dotenv_case(penstock_proc, db, {".env": "PORT=%d\n" % from_file},
                {"PORT": from_env, "ENV": None}, from_env, [from_file])


def test_invalid_value_in_dotenv_stops_startup(penstock_proc):
    with tempfile.TemporaryDirectory(prefix="pstest-dotenv-") as d:
        write("%s/.env" % d, "EVENT_WORKER_POOL_SIZE=0\n")
        p = penstock_proc(env={"ENV": None}, cwd=d, wait=False)
        rc = p.wait_exit(10)
        assert rc not in (None, 0), "exit %s with EVENT_WORKER_POOL_SIZE=0 in .env" % rc
        assert "EVENT_WORKER_POOL_SIZE" in p.stderr_text(), p.stderr_tail()


def test_version():
    r = subprocess.run([pstest.PENSTOCK_BIN, "version"], capture_output=True, timeout=10)
    out = (r.stdout + r.stderr).decode("utf-8", "replace")
    assert r.returncode == 0, "penstock version exited %d: %s" % (r.returncode, out)
    assert re.search(r"\d+\.\d+", out), "no version in %r" % out


def test_readme_configuration_table_matches_the_code():
    """README.md's configuration reference is the one `penstock config --markdown` prints, so it cannot drift."""
    build = os.path.dirname(pstest.PENSTOCK_BIN)
    r = subprocess.run([os.path.join(pstest.ROOT, "scripts", "config-doc"), build, "--check"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
