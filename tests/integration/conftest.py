"""pytest wiring of penstock's integration tests: fixtures around pstest's harness.

Fixtures:
  logdir         a directory for the penstock logs of one test module
  clickhouse     the ClickHouse client
  db             a fresh ClickHouse database for one test module (pstest<random>), dropped after it
  penstock_proc  a factory: penstock_proc(env=..., db=...) -> started Penstock; every process it made is
                 stopped (killed if still running) when the test ends, and its stderr tail is shown when
                 the test failed
"""

import os
import shutil
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import pstest  # noqa: E402


def pytest_configure(config):
    if not os.access(pstest.PENSTOCK_BIN, os.X_OK):
        raise pytest.UsageError("penstock binary not found or not executable: %s (set PENSTOCK_BIN)"
                                % pstest.PENSTOCK_BIN)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def pytest_terminal_summary(terminalreporter):
    if pstest.REPORT_LINES:
        terminalreporter.section("measurements")
        for line in pstest.REPORT_LINES:
            terminalreporter.write_line(line)


@pytest.fixture(scope="module")
def logdir(request):
    base = os.environ.get("PS_TEST_LOG_DIR")
    if base:
        d = os.path.join(base, request.module.__name__)
        os.makedirs(d, exist_ok=True)
        yield d
    else:
        d = tempfile.mkdtemp(prefix="pstest-%s-" % request.module.__name__)
        yield d
        shutil.rmtree(d, True)


@pytest.fixture(scope="session")
def clickhouse():
    ch = pstest.ClickHouse()
    assert ch.scalar("SELECT 1") == "1", "ClickHouse at %s does not answer" % pstest.CLICKHOUSE_URL
    return ch


@pytest.fixture(scope="module")
def db(clickhouse):
    # Messages another module left in the shared consumer queue would land here.
    pstest.purge_queue(pstest.CLICKHOUSE_QUEUE)
    name = clickhouse.create_database()
    yield name
    clickhouse.drop_database(name)


@pytest.fixture
def penstock_proc(request, logdir):
    made = []

    def make(env=None, db=None, cwd=None, start=True, wait=True, name=None):
        p = pstest.Penstock(logdir, db=db, env=env, cwd=cwd, name=name or request.node.name.split("[")[0])
        made.append(p)
        if start:
            p.start(wait=wait)
        return p

    yield make
    rep = getattr(request.node, "rep_call", None)
    for p in made:
        if rep is not None and rep.failed and p.proc is not None:
            print("\n---- %s stderr (tail) ----\n%s" % (p.name, p.stderr_tail(60)))
        p.kill()
