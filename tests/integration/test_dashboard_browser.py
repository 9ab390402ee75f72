"""The live web view in a real headless browser (Debian's chromium and chromium-driver,
driven by selenium), inside the test's namespace: the page loads through the stack
itself, shows a connection the test opened, and that connection's ladder has the
three handshake arrows. The screenshot is kept as a test artifact
(``$TCPSTACK_ARTIFACTS``, default ``test-artifacts/`` in the repository)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.daemon import STACK_ADDRESS, DaemonFactory, assert_clean_exit
from tests.netns import REPO_ROOT, NetNS

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PORT = 8080

BROWSER = """
import json, sys, tempfile
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

url, remote, shot = sys.argv[1], sys.argv[2], sys.argv[3]
opts = webdriver.ChromeOptions()
opts.binary_location = "{chromium}"
profile = tempfile.mkdtemp(prefix="tcpstack-chromium-")
for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
            "--window-size=1500,1300", "--user-data-dir=" + profile):
    opts.add_argument(arg)
driver = webdriver.Chrome(service=Service("{chromedriver}"), options=opts)
try:
    driver.set_page_load_timeout(20)
    driver.get(url)
    wait = WebDriverWait(driver, 20)
    row = wait.until(lambda d: d.find_element(
        By.CSS_SELECTOR, '#connections tbody tr[data-remote="' + remote + '"]'))
    state = row.find_elements(By.TAG_NAME, "td")[1].text
    row.click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#ladder svg g.arrow")) >= 3)
    arrows = [a.get_attribute("class") for a in
              driver.find_elements(By.CSS_SELECTOR, "#ladder svg g.arrow")]
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#tseq svg") and
               d.find_elements(By.CSS_SELECTOR, "#cc svg"))
    status = driver.find_element(By.ID, "status").text
    title = driver.title
    driver.save_screenshot(shot)
    print("RESULT " + json.dumps({{"state": state, "arrows": arrows, "status": status,
                                   "title": title}}), flush=True)
finally:
    driver.quit()
"""

HOLDER = """
import socket, sys
s = socket.create_connection(("{addr}", 7), timeout=10)
s.sendall(b"hello, dashboard\\n" * 100)
got = b""
while len(got) < 1700:
    got += s.recv(65536)
print(s.getsockname()[1], flush=True)
sys.stdin.readline()
s.close()
"""


def require_browser() -> None:
    """Skip, saying why, only when chromium and chromium-driver cannot be installed
    here; fail when they could be but are not (tools/test.sh installs them)."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if not missing:
        return
    why = os.environ.get("TCPSTACK_NO_BROWSER")  # set by tools/test.sh when apt failed
    if why:
        pytest.skip(f"no headless browser: {why}")
    apt_cache = shutil.which("apt-cache")
    if apt_cache is None:
        pytest.skip(f"no headless browser: {', '.join(missing)} missing and this is no "
                    "Debian system (no apt-cache) to install chromium and chromium-driver")
    policy = subprocess.run([apt_cache, "policy", "chromium", "chromium-driver"],
                            capture_output=True, text=True, timeout=60, check=False)
    candidates = [line.split(":", 1)[1].strip() for line in policy.stdout.splitlines()
                  if line.strip().startswith("Candidate:")]
    if len(candidates) < 2 or "(none)" in candidates:
        pytest.skip("no headless browser: apt has no chromium/chromium-driver package for "
                    "this system")
    pytest.fail(f"{', '.join(missing)} missing but installable: run tools/test.sh, or "
                "apt-get install chromium chromium-driver")


def artifacts_dir() -> Path:
    path = Path(os.environ.get("TCPSTACK_ARTIFACTS", REPO_ROOT / "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def factory(netns: NetNS, tmp_path: Path) -> Iterator[DaemonFactory]:
    f = DaemonFactory(netns, tmp_path)
    try:
        yield f
    finally:
        f.stop_all()


def test_dashboard_in_a_headless_browser_shows_a_connection_and_its_handshake(
        factory: DaemonFactory, netns: NetNS, tmp_path: Path) -> None:
    require_browser()
    d = factory("--dashboard", f"{STACK_ADDRESS}:{PORT}", "--no-control-socket")
    holder = subprocess.Popen(netns.argv([sys.executable, "-c",
                                          HOLDER.format(addr=STACK_ADDRESS)]),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdin is not None
        port = int(holder.stdout.readline())
        shot = tmp_path / "dashboard.png"
        script = BROWSER.format(chromium=CHROMIUM, chromedriver=CHROMEDRIVER)
        env = netns.python_env() | {"SE_OFFLINE": "true", "HOME": str(tmp_path)}
        proc = subprocess.run(
            netns.argv([sys.executable, "-c", script, f"http://{STACK_ADDRESS}:{PORT}/",
                        f"10.0.0.1:{port}", str(shot)]),
            capture_output=True, text=True, timeout=120, env=env, check=False)
        detail = f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        assert proc.returncode == 0 and len(lines) == 1, detail
        result = json.loads(lines[0][len("RESULT "):])
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=10)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert result["title"].startswith("tcpstack")
    assert result["state"] == "ESTABLISHED"
    assert result["status"] == "live"  # the server-sent events arrive
    assert result["arrows"] == ["arrow in syn", "arrow out syn ack", "arrow in ack"]
    assert shot.stat().st_size > 10_000
    shutil.copy(shot, artifacts_dir() / "dashboard.png")
    exit_ = d.stop()
    assert_clean_exit(exit_)
