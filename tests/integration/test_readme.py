"""The README's set-up, as a newcomer follows it, on a clean copy of the repository.

The README promises two commands: the first (`make run`) brings up the embedded pipeline (no RabbitMQ, no
ClickHouse), prints how to send events and the query that shows them; the second is the test command,
which is what CI runs (.ci/run calls it, and this very suite is part of it, so here it is only checked to
be the one CI runs). The first is run for real: in a copy of the repository's files (no build tree, no
data), it must build and serve, the send command it prints must land 1000 events, and the query it prints
must count them.
"""

import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time

import pstest

README = os.path.join(pstest.ROOT, "README.md")
CI_RUN = os.path.join(pstest.ROOT, ".ci", "run")
# Building from nothing is most of it; a 2-core machine needs about a minute and a half.
SERVE_TIMEOUT_S = 420


def setup_commands():
    text = open(README, encoding="utf-8").read()
    section = text[text.index("## Set-up"):]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.split("#", 1)[0].strip()]


def test_readme_set_up_is_two_commands_and_ci_runs_the_second():
    cmds = setup_commands()
    assert len(cmds) == 2, "the README's set-up is %d commands: %s" % (len(cmds), cmds)
    assert cmds[0] == "make run", cmds
    ci = open(CI_RUN, encoding="utf-8").read()
    test_cmd = cmds[1].split()
    assert test_cmd[0] == "make", cmds
    ci_make = [shlex.split(l.split("|")[0]) for l in ci.splitlines() if l.strip().startswith("make ")]
    assert any(c[0] == "make" and set(test_cmd[1:]) <= set(c[1:]) for c in ci_make), \
        ".ci/run does not run the README's test command %r (it runs %s)" % (cmds[1], ci_make)


def copy_repository(dst):
    """The repository's files as a clone has them (tracked, plus new files not ignored), nothing built."""
    out = subprocess.run(["git", "-C", pstest.ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         check=True, capture_output=True).stdout
    n = 0
    for rel in out.decode().split("\0"):
        src = os.path.join(pstest.ROOT, rel)
        if not rel or not os.path.isfile(src):
            continue
        os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
        shutil.copy2(src, os.path.join(dst, rel))
        n += 1
    return n


def test_readme_first_command_lands_demo_events_in_the_printed_query():
    cmds = setup_commands()
    work = tempfile.mkdtemp(prefix="pstest-readme-")
    proc = None
    try:
        assert copy_repository(work) > 50
        assert not os.path.exists(os.path.join(work, "build")) and not os.path.exists(os.path.join(work, "data"))
        port, mport = pstest.free_port(), pstest.free_port()
        env = {k: v for k, v in os.environ.items()
               if k not in pstest.PENSTOCK_VARS and k not in pstest.SYSTEMD_VARS and not k.startswith("PENSTOCK_")}
        env.update({"PORT": str(port), "GIN_PORT": str(mport)})
        log_path = os.path.join(work, "make-run.log")
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(shlex.split(cmds[0]), cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)

        def log_text():
            with open(log_path, encoding="utf-8", errors="replace") as f:
                return f.read()

        t0 = time.monotonic()
        deadline = t0 + SERVE_TIMEOUT_S
        while time.monotonic() < deadline:
            assert proc.poll() is None, "`%s` exited %s before serving:\n%s" % (cmds[0], proc.returncode,
                                                                               log_text()[-4000:])
            if "penstock serving" in log_text():
                break
            time.sleep(0.5)
        else:
            raise AssertionError("`%s` not serving after %ds:\n%s" % (cmds[0], SERVE_TIMEOUT_S, log_text()[-4000:]))
        up_s = time.monotonic() - t0
        text = log_text()
        assert "mode=embedded" in text, "not the embedded mode:\n" + text[-3000:]
        send = re.search(r"^\s*send events:\s+(.*)$", text, re.M)
        query = re.search(r"^\s*see them:\s+(.*)$", text, re.M)
        assert send and query, "make run does not print how to send and see events:\n" + text[-3000:]
        assert "--demo 1000" in send.group(1) and "127.0.0.1:%d" % port in send.group(1), send.group(1)
        assert query.group(1).startswith("sqlite3 "), query.group(1)

        r = subprocess.run(send.group(1), shell=True, cwd=work, env=env, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, "%s: exit %d\n%s%s" % (send.group(1), r.returncode, r.stdout, r.stderr)

        def counted():
            q = subprocess.run(query.group(1), shell=True, cwd=work, capture_output=True, text=True, timeout=30)
            if q.returncode != 0:
                return None
            rows = [l.split("|") for l in q.stdout.split() if "|" in l]
            return sum(int(n) for _, n in rows) == 1000 and len(rows) >= 2
        pstest.poll(counted, 60, interval=0.5, what="the printed query to count the 1000 demo events")
        pstest.report("readme: `%s` serving %.0fs after start on a clean copy (build included); "
                      "1000 demo events counted by the printed query" % (cmds[0], up_s))

        # Ctrl-C's equivalent for the server only: make then ends as its recipe did.
        pids = subprocess.run(["pgrep", "-g", str(proc.pid), "-f", "build/penstock serve"], capture_output=True,
                              text=True).stdout.split()
        assert len(pids) == 1, "penstock processes in make run's group: %s" % pids
        os.kill(int(pids[0]), signal.SIGTERM)
        assert proc.wait(timeout=40) == 0, log_text()[-3000:]
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(work, True)
