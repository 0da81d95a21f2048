"""The status port's dashboard in a real browser (Debian's headless
chromium): it renders the live figures of /v1/status and follows the
upstream going away. With LICPROXY_SCREENSHOTS=DIR it also leaves
dashboard-healthy.png and dashboard-outage.png there (make screenshots)."""
import os
import re
import shutil
import subprocess
import tempfile

from lp import Fixture, Pki, Server, wait_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]


def browse(url, *what):
    """Load url in a fresh headless chromium; returns its stdout."""
    with tempfile.TemporaryDirectory() as prof:
        p = subprocess.run([CHROMIUM] + FLAGS + [
            "--user-data-dir=" + prof, "--virtual-time-budget=4000"] +
            list(what) + [url], capture_output=True, text=True, timeout=90)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout


def rendered(url):
    """{element id: text} of the page after its scripts ran."""
    dom = browse(url, "--dump-dom")
    fields = dict(re.findall(r'<(?:div|dd|span|dt)[^>]*id="(\w+)"[^>]*>'
                             r'([^<]*)<', dom))
    banner = re.search(r'<div id="banner"([^>]*)>([^<]*)<', dom)
    fields["banner"] = banner.group(2) if banner and \
        "display: block" in banner.group(1) else ""
    return fields


def screenshot(url, name):
    out = os.environ.get("LICPROXY_SCREENSHOTS")
    if not out:
        return
    path = os.path.join(os.path.abspath(out), name)
    browse(url, "--window-size=1100,560", "--screenshot=" + path)
    assert os.path.getsize(path) > 10000, path


def test_dashboard_in_a_browser():
    """Healthy proxy: Connected, the lease and usage figures, processes;
    upstream stopped: TrustBased with the outage banner, same page."""
    assert os.path.exists(CHROMIUM), "chromium missing: make test installs it"
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth = fx.add(Server(pki, "authority"))
        auth.start()
        keys = [auth.create_key(name="svc%d" % i) for i in range(3)]
        relay = auth.create_key(name="relay", role="proxy")
        proxy = fx.add(Server(pki, "proxy", name="proxy", extra={
            "license": {"server_url": [auth.url], "ca_file": pki.ca,
                        "trusted_keys": [pki.pub], "timeout": "1s",
                        "sync_interval": "1s"}},
            env={"LICPROXY_LICENSE_KEY": relay}))
        proxy.start()
        for k in keys:
            assert proxy.license(k).status == 200
        url = "http://127.0.0.1:%d/" % proxy.status_port
        r = proxy.status("/")
        assert r.status == 200, r
        assert r.headers.get("content-type", "").startswith("text/html"), r
        assert "http://" not in r.body and "https://" not in r.body, \
            "the page must not load anything from elsewhere"
        st = wait_for(lambda: proxy.status_json()["survival_s"] and
                      proxy.status_json(), what="survival_s")
        f = rendered(url)
        assert re.match(r"^2d 2[23]h$", f["survival"]), f  # lease_ttl 72h
        assert f["state"] == "Connected", f
        assert f["mode"] == "proxy mode", f
        assert f["leases"] == str(st["leases"]["cached"]), (f, st)
        assert f["workers"] == "2 of 2 alive", f
        assert f["uplink"] == "alive", f
        assert f["usage_forwarded"] == str(st["usage"]["forwarded"]), f
        assert f["banner"] == "", f
        screenshot(url, "dashboard-healthy.png")

        auth.stop()
        wait_for(lambda: proxy.status_json()["state"] == "TrustBased",
                 timeout=15, what="TrustBased")
        f = rendered(url)
        assert f["state"] == "TrustBased", f
        assert "Upstream unreachable" in f["banner"], f
        assert f["survival"] in f["banner"], f
        assert f["up_error"] not in ("", "-"), f
        screenshot(url, "dashboard-outage.png")
