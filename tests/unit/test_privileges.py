"""``tcpstack serve --user/--group``: resolving the target and dropping privileges.

The lookups and the read-back check run anywhere. The real drop runs in a child
interpreter (it cannot be undone in the test process) and needs root; without
root those tests skip. No network configuration is involved.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from tcpstack.privileges import (
    Credentials,
    PrivilegeError,
    _verify,
    process_status,
    resolve_credentials,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def _nobody() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("this system has no user 'nobody'")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
    return env


# ------------------------------------------------------------------ resolving


def test_user_name_resolves_to_its_uid_and_primary_group() -> None:
    nobody = _nobody()
    creds = resolve_credentials("nobody")
    assert creds == Credentials(uid=nobody.pw_uid, gid=nobody.pw_gid, name="nobody")


def test_numeric_user_id_resolves_like_the_name() -> None:
    nobody = _nobody()
    assert resolve_credentials(str(nobody.pw_uid)) == resolve_credentials("nobody")


def test_group_option_replaces_the_primary_group() -> None:
    _nobody()
    creds = resolve_credentials("nobody", "0")
    assert creds.gid == 0


@pytest.mark.parametrize(
    ("user", "group", "fragment"),
    [
        pytest.param("no-such-user-tcpstack", None, "unknown user", id="unknown-user"),
        pytest.param("4294967296999", None, "unknown user", id="uid-overflow"),
        pytest.param("nobody", "no-such-group-tcpstack", "unknown group", id="unknown-group"),
        pytest.param("root", None, "is root", id="root-by-name"),
        pytest.param("0", None, "is root", id="root-by-id"),
        pytest.param("", None, "needs a user", id="empty"),
    ],
)
def test_bad_targets_are_refused_with_a_reason(
    user: str, group: str | None, fragment: str
) -> None:
    _nobody()
    with pytest.raises(PrivilegeError, match=fragment):
        resolve_credentials(user, group)


# ----------------------------------------------------------------- read-back


def _status(**overrides: str) -> dict[str, str]:
    status = {"Uid": "65534\t65534\t65534\t65534", "Gid": "65534\t65534\t65534\t65534",
              "Groups": "", "CapInh": "0" * 16, "CapPrm": "0" * 16, "CapEff": "0" * 16,
              "CapAmb": "0" * 16, "NoNewPrivs": "1"}
    status.update(overrides)
    return status


NOBODY = Credentials(uid=65534, gid=65534, name="nobody")


def test_verify_accepts_a_complete_drop() -> None:
    _verify(_status(), NOBODY)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        pytest.param({"Uid": "65534\t0\t65534\t65534"}, "IDs", id="effective-uid-still-root"),
        pytest.param({"Uid": "65534\t65534\t0\t65534"}, "IDs", id="saved-uid-still-root"),
        pytest.param({"Gid": "0\t0\t0\t0"}, "IDs", id="group-still-root"),
        pytest.param({"Groups": "0"}, "supplementary", id="supplementary-groups-left"),
        pytest.param({"CapEff": "0000000000001000"}, "CapEff", id="net-admin-effective"),
        pytest.param({"CapPrm": "000001ffffffffff"}, "CapPrm", id="caps-permitted"),
        pytest.param({"CapInh": "0000000000000400"}, "CapInh", id="caps-inheritable"),
        pytest.param({"CapAmb": "0000000000001000"}, "CapAmb", id="caps-ambient"),
        pytest.param({"NoNewPrivs": "0"}, "no_new_privs", id="no-new-privs-off"),
    ],
)
def test_verify_rejects_anything_left_over(overrides: dict[str, str], fragment: str) -> None:
    with pytest.raises(PrivilegeError, match=fragment):
        _verify(_status(**overrides), NOBODY)


def test_process_status_reads_key_value_lines(tmp_path: Path) -> None:
    path = tmp_path / "status"
    path.write_text("Name:\tpython3\nUid:\t0\t0\t0\t0\nGroups:\t\nCapEff:\t000001ffffffffff\n")
    assert process_status(path) == {"Name": "python3", "Uid": "0\t0\t0\t0", "Groups": "",
                                    "CapEff": "000001ffffffffff"}


# ------------------------------------------------------------------ real drop

_DROP_CHILD = """
import json, os, sys
from tcpstack.privileges import drop_privileges, resolve_credentials
fd = os.open("/dev/null", os.O_RDWR)          # opened while root, like the TUN
status = drop_privileges(resolve_credentials("nobody"))
try:
    os.setuid(0)
    regained = True
except PermissionError:
    regained = False
os.write(fd, b"still usable")                 # a descriptor opened earlier keeps working
print(json.dumps({"status": status, "regained": regained}))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_drop_leaves_uid_nobody_no_capabilities_and_no_way_back() -> None:
    nobody = _nobody()
    result = subprocess.run([sys.executable, "-c", _DROP_CHILD], capture_output=True,
                            text=True, timeout=30, env=_env(), check=False)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    status = out["status"]
    assert status["Uid"].split() == [str(nobody.pw_uid)] * 4
    assert status["Gid"].split() == [str(nobody.pw_gid)] * 4
    for key in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert int(status[key], 16) == 0, (key, status[key])
    if int(process_status()["CapEff"], 16) >> 8 & 1:  # CAP_SETPCAP: the bounding set goes too
        assert int(status["CapBnd"], 16) == 0, status["CapBnd"]
    assert status["NoNewPrivs"] == "1"
    assert out["regained"] is False


_DROP_WITH_A_THREAD = """
import os, threading
from tcpstack.privileges import PrivilegeError, drop_privileges, resolve_credentials
done = threading.Event()
t = threading.Thread(target=done.wait)
t.start()
try:
    drop_privileges(resolve_credentials("nobody"))
    print("DROPPED")
except PrivilegeError as e:
    print("REFUSED", e, os.getuid())
finally:
    done.set()
    t.join()
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_drop_refuses_while_another_thread_runs_and_changes_nothing() -> None:
    _nobody()
    result = subprocess.run([sys.executable, "-c", _DROP_WITH_A_THREAD], capture_output=True,
                            text=True, timeout=30, env=_env(), check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("REFUSED cannot drop privileges with 2 threads"), \
        result.stdout
    assert result.stdout.split()[-1] == "0"  # still root: nothing was half done


@pytest.mark.skipif(os.geteuid() == 0, reason="checks the error when not root")
def test_drop_without_root_fails_with_a_reason() -> None:
    from tcpstack.privileges import drop_privileges

    with pytest.raises(PrivilegeError, match="needs root"):
        drop_privileges(Credentials(uid=65534, gid=65534, name="nobody"))
