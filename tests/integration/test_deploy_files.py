"""The deployment files agree with each other and with the metrics reference.

docs/operations.md holds the metrics reference (a table: metric, type, labels, meaning). Checked here:
- the Grafana dashboard parses, takes its data source from DS_PROMETHEUS, and its expressions use only
  documented `penstock_`/`process_` metrics (a histogram's _bucket/_sum/_count count as the histogram);
- the alert rules parse, are complete, and use only documented metrics;
- every documented metric is on the dashboard or in an alert, or listed after "Not charted:" in the doc;
- the Prometheus config scrapes job `penstock` and loads the alerts;
- the systemd unit has the notify/watchdog/hardening settings the docs promise, and, when systemd-analyze
  is installed, `systemd-analyze verify` accepts it (those tests exist only where the tool does);
- the example env file names exactly the variables of the README's configuration table.

Needs no server: it reads files only.
"""

import json
import os
import re
import shutil
import subprocess

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DOC = os.path.join(ROOT, "docs", "operations.md")
DASHBOARD = os.path.join(ROOT, "deploy", "grafana", "penstock-dashboard.json")
ALERTS = os.path.join(ROOT, "deploy", "prometheus", "alerts.yml")
PROMETHEUS = os.path.join(ROOT, "deploy", "prometheus", "prometheus.yml")
UNIT = os.path.join(ROOT, "deploy", "systemd", "penstock.service")
ENV_EXAMPLE = os.path.join(ROOT, "deploy", "systemd", "penstock.env.example")
README = os.path.join(ROOT, "README.md")

METRIC_NAME = re.compile(r"\b((?:penstock|process)_[A-Za-z0-9_]*)")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
DASHBOARD_ROWS = ["Ingest", "Queue", "Publish", "Land", "Dependencies", "Process"]


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def doc_section(title):
    """The text of the '## title' section of docs/operations.md."""
    text = read(DOC)
    m = re.search(r"^## %s\n(.*?)(?=^## |\Z)" % re.escape(title), text, re.M | re.S)
    assert m, "docs/operations.md has no '## %s' section" % title
    return m.group(1)


def documented_metrics():
    """{name: (type, [labels])} from the metrics table of docs/operations.md."""
    metrics = {}
    for line in doc_section("Metrics").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 4 or not re.fullmatch(r"`(?:penstock|process)_[a-z0-9_]+`", cells[0]):
            continue
        name = cells[0].strip("`")
        assert name not in metrics, "%s documented twice" % name
        labels = re.findall(r"`([a-z_]+)`", cells[2])
        metrics[name] = (cells[1], labels)
    return metrics


def not_charted():
    """Names listed after 'Not charted:' in the metrics section (may be none)."""
    m = re.search(r"^Not charted:(.*?)(?:\n\n|\Z)", doc_section("Metrics"), re.M | re.S)
    assert m, "the metrics section must say which metrics are not charted ('Not charted: none.' if none)"
    return set(re.findall(r"`((?:penstock|process)_[a-z0-9_]+)`", m.group(1)))


def metric_names(expr, documented):
    """The documented metric names an expression uses; unknown names are returned as they are."""
    names = set()
    for n in METRIC_NAME.findall(expr):
        if n not in documented:
            for suffix in HISTOGRAM_SUFFIXES:
                base = n[: -len(suffix)]
                if n.endswith(suffix) and documented.get(base, ("",))[0] == "histogram":
                    n = base
                    break
        names.add(n)
    return names


def all_panels(panels):
    for p in panels:
        yield p
        yield from all_panels(p.get("panels", []))


def dashboard():
    with open(DASHBOARD, encoding="utf-8") as f:
        return json.load(f)


def dashboard_exprs(d):
    exprs = []
    for p in all_panels(d["panels"]):
        for t in p.get("targets", []):
            exprs.append(("panel %r" % p.get("title"), t["expr"]))
    for v in d.get("templating", {}).get("list", []):
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if isinstance(q, str) and v.get("type") == "query":
            exprs.append(("variable %r" % v["name"], q))
    return exprs


def alert_rules():
    with open(ALERTS, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    return [r for g in doc["groups"] for r in g["rules"]]


def parse_unit(path):
    """systemd unit file -> {section: [(key, value), ...]}; keys may repeat, as systemd allows."""
    sections, current = {}, None
    text = read(path).replace("\\\n", " ")
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        m = re.fullmatch(r"\[([A-Za-z]+)\]", line)
        if m:
            current = sections.setdefault(m.group(1), [])
            continue
        assert current is not None, "%s:%d: setting outside a section" % (path, n)
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", key.strip()), "%s:%d: not key=value: %r" % (path, n, raw)
        current.append((key.strip(), value.strip()))
    return sections


def unit_values(section, key):
    return [v for k, v in section if k == key]


def seconds(value):
    m = re.fullmatch(r"(\d+)\s*(s|sec|min|m)?", value)
    assert m, "cannot read a time span from %r" % value
    return int(m.group(1)) * (60 if m.group(2) in ("min", "m") else 1)


# ---- metrics reference ----

def test_metrics_table_is_well_formed():
    metrics = documented_metrics()
    assert len(metrics) >= 30, "only %d metrics parsed from docs/operations.md" % len(metrics)
    for name, (kind, _labels) in metrics.items():
        assert kind in ("counter", "gauge", "histogram"), "%s: unknown type %r" % (name, kind)
        if kind == "counter":
            assert name.endswith("_total"), "counter %s does not end in _total" % name
        else:
            assert not name.endswith("_total"), "%s %s ends in _total" % (kind, name)
    assert "penstock_build_info" in metrics and metrics["penstock_build_info"][1] == ["version"]


# ---- dashboard ----

def test_dashboard_parses_and_takes_its_datasource_from_DS_PROMETHEUS():
    d = dashboard()
    assert d["schemaVersion"] >= 36
    assert any(i["name"] == "DS_PROMETHEUS" and i["pluginId"] == "prometheus" for i in d.get("__inputs", []))
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    rows = [p["title"] for p in d["panels"] if p["type"] == "row"]
    assert rows == DASHBOARD_ROWS
    ids = [p["id"] for p in all_panels(d["panels"])]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for p in all_panels(d["panels"]):
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${DS_PROMETHEUS}", "panel %r" % p["title"]
        assert p["targets"], "panel %r has no query" % p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${DS_PROMETHEUS}", "panel %r" % p["title"]


def test_dashboard_uses_only_documented_metrics():
    documented = documented_metrics()
    unknown = []
    for where, expr in dashboard_exprs(dashboard()):
        names = metric_names(expr, documented)
        assert names, "%s uses no penstock metric: %s" % (where, expr)
        unknown += ["%s: %s" % (where, n) for n in sorted(names - set(documented))]
    assert not unknown, "undocumented metrics on the dashboard:\n" + "\n".join(unknown)


# ---- alerts ----

def test_alerts_parse_and_are_complete():
    rules = alert_rules()
    assert len(rules) >= 10
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), "alert names repeat"
    for r in rules:
        assert set(r) <= {"alert", "expr", "for", "labels", "annotations"}, r["alert"]
        assert r["labels"]["severity"] in ("critical", "warning"), r["alert"]
        assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]
        assert 'job="penstock"' in r["expr"], "%s does not select job=\"penstock\"" % r["alert"]


def test_alerts_use_only_documented_metrics():
    documented = documented_metrics()
    unknown = []
    for r in alert_rules():
        unknown += ["%s: %s" % (r["alert"], n) for n in sorted(metric_names(r["expr"], documented) - set(documented))]
    assert not unknown, "undocumented metrics in alerts.yml:\n" + "\n".join(unknown)


def test_alerts_are_documented():
    section = doc_section("Alerts")
    missing = [r["alert"] for r in alert_rules() if "`%s`" % r["alert"] not in section]
    assert not missing, "alerts not described in docs/operations.md: %s" % missing


# ---- coverage ----

def test_every_documented_metric_is_charted_or_alerted():
    documented = documented_metrics()
    used = set()
    for _where, expr in dashboard_exprs(dashboard()):
        used |= metric_names(expr, documented)
    for r in alert_rules():
        used |= metric_names(r["expr"], documented)
    exempt = not_charted()
    assert exempt <= set(documented), "'Not charted' names undocumented metrics: %s" % sorted(exempt - set(documented))
    assert not exempt & used, "listed as not charted but used: %s" % sorted(exempt & used)
    missing = sorted(set(documented) - used - exempt)
    assert not missing, "documented but neither on the dashboard nor in an alert: %s" % missing


# ---- Prometheus ----

def test_prometheus_config_scrapes_penstock():
    with open(PROMETHEUS, encoding="utf-8") as f:
        cfg = yaml.safe_load(f)
    assert "alerts.yml" in cfg["rule_files"]
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    job = jobs["penstock"]
    assert job.get("scrape_interval", cfg["global"]["scrape_interval"]) == "15s"
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets and all(t.endswith(":8080") for t in targets)


# ---- systemd ----

def test_systemd_unit_settings():
    unit = parse_unit(UNIT)
    assert set(unit) == {"Unit", "Service", "Install"}
    svc = unit["Service"]

    def one(key):
        values = unit_values(svc, key)
        assert len(values) == 1, "[Service] %s= appears %d times" % (key, len(values))
        return values[0]

    assert one("Type") == "notify"
    assert one("NotifyAccess") == "main"
    assert seconds(one("WatchdogSec")) > 0
    assert one("ExecStart") == "/usr/local/bin/penstock serve"
    assert one("EnvironmentFile") == "-/etc/penstock/penstock.env"
    assert one("Restart") == "on-failure"
    assert one("KillSignal") == "SIGTERM"
    # SHUTDOWN_TIMEOUT_MS defaults to 30000: systemd must wait longer before SIGKILL.
    assert seconds(one("TimeoutStopSec")) > 30
    assert one("CapabilityBoundingSet") == ""
    assert one("LimitNOFILE") == "65536"
    assert one("RestrictAddressFamilies").split() == ["AF_INET", "AF_INET6", "AF_UNIX"]
    assert one("ProtectSystem") == "strict"
    assert "@system-service" in unit_values(svc, "SystemCallFilter")
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices", "ProtectKernelTunables",
                "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ProtectClock",
                "ProtectHostname", "RestrictNamespaces", "RestrictRealtime", "RestrictSUIDSGID",
                "LockPersonality", "MemoryDenyWriteExecute", "DynamicUser"):
        assert one(key) == "yes", key
    assert one("SystemCallArchitectures") == "native"
    assert one("StateDirectory") == "penstock"
    assert one("WorkingDirectory") == "/var/lib/penstock"
    assert unit_values(unit["Install"], "WantedBy") == ["multi-user.target"]


def unit_copy_with_existing_binary(tmp_path):
    """The unit with ExecStart pointed at an executable that exists here (verify checks it)."""
    binary = os.environ.get("PENSTOCK_BIN") or os.path.join(ROOT, "build", "penstock")
    if not os.access(binary, os.X_OK):
        binary = shutil.which("true")
    text = read(UNIT).replace("ExecStart=/usr/local/bin/penstock ", "ExecStart=%s " % os.path.abspath(binary))
    path = tmp_path / "penstock.service"
    path.write_text(text)
    return path


SYSTEMD_ANALYZE = shutil.which("systemd-analyze")

if SYSTEMD_ANALYZE:
    def test_systemd_analyze_verify(tmp_path):
        path = unit_copy_with_existing_binary(tmp_path)
        r = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", str(path)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
        # verify exits 0 on ignored settings too; any line about our file is a finding.
        findings = [l for l in r.stdout.splitlines() if "penstock.service" in l]
        assert r.returncode == 0 and not findings, r.stdout

    _help = subprocess.run([SYSTEMD_ANALYZE, "security", "--help"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=60).stdout
    if "--offline" in _help and "--threshold" in _help:
        def test_systemd_analyze_security_exposure(tmp_path):
            """The hardening holds: exposure 2.5 at most (systemd's scale: 0 best, 10 worst)."""
            path = unit_copy_with_existing_binary(tmp_path)
            r = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=yes", "--threshold=25", "--no-pager",
                                str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
            assert r.returncode == 0, r.stdout[-3000:]


# ---- example environment ----

def test_env_example_names_exactly_the_configuration_variables():
    readme = read(README)
    table = readme[readme.index("<!-- BEGIN CONFIG -->"):readme.index("<!-- END CONFIG -->")]
    known = set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", table, re.M))
    assert {"GIN_PORT", "DEBUG", "ACCESS_LOG_PER_SEC", "RABBITMQ_URL"} <= known
    named = set(re.findall(r"^#?([A-Z][A-Z0-9_]*)=", read(ENV_EXAMPLE), re.M))
    assert named - known == set(), "env example sets unknown variables: %s" % sorted(named - known)
    assert known - named == set(), "env example lacks: %s" % sorted(known - named)
    for unit_env in unit_values(parse_unit(UNIT)["Service"], "Environment"):
        for assignment in unit_env.split():
            assert assignment.split("=")[0] in known, assignment
