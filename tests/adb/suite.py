#!/usr/bin/env python3
"""An adb-driven test suite against two VPs at once, written the way users
write theirs: with PyPI's adbutils (through Google's adb 36, which its wheel
ships) and PyPI's adb-shell (talking to adbd directly, no adb server).

usage: suite.py VP_A VP_B        (both running; VP_B is made the foreground)
env:   CELLCTL (path of cellctl), CELLS_SOCKET, PYTHONPATH with target/pylib,
       SUITE_WORK (a scratch folder; its .android/ holds the suite's keys)

Prints one line per check and `N passed, N failed`; exit status 1 if any
failed. Every isolation check ("B does not see it") has its positive
control ("A does").
"""
import atexit
import io
import os
import re
import socket
import subprocess
import sys
import tarfile
import threading
import time
import traceback
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer

WORK = os.environ.get("SUITE_WORK") or "/tmp/cells-adb-suite"
os.makedirs(WORK, exist_ok=True)
os.environ["HOME"] = WORK


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


# adbutils talks to an adb server of its own on a port of its own, with the
# adb its wheel ships (Google's current one, not Debian's).
os.environ["ANDROID_ADB_SERVER_PORT"] = str(free_port())
import adbutils  # noqa: E402
from adbutils import AdbTimeout  # noqa: E402

ADB = os.path.join(os.path.dirname(adbutils.__file__), "binaries", "adb")
os.environ["ADBUTILS_ADB_PATH"] = ADB
from PIL import Image  # noqa: E402

CELLCTL = os.environ.get("CELLCTL", "cellctl")
A_NAME, B_NAME = sys.argv[1], sys.argv[2]
RESULTS = []


def cellctl(*args, check=True):
    r = subprocess.run([CELLCTL, *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"cellctl {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def serial_of(vp):
    return cellctl("adb", vp).strip().splitlines()[-1]


def wait(what, cond, timeout=10.0, step=0.1):
    end = time.time() + timeout
    while time.time() < end:
        v = cond()
        if v:
            return v
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")


def vp_png(vp):
    path = os.path.join(WORK, f"{vp}.png")
    cellctl("screenshot", "--vp", vp, "-o", path)
    return Image.open(path).convert("RGB")


def panel_png():
    path = os.path.join(WORK, "panel.png")
    cellctl("screenshot", "-o", path)
    return Image.open(path).convert("RGB")


def check(fn):
    name = fn.__name__
    t0 = time.time()
    try:
        fn()
        RESULTS.append((name, True))
        print(f"ok   {name} ({time.time() - t0:.1f} s)", flush=True)
    except Exception as e:  # a failed check is reported, the suite goes on
        RESULTS.append((name, False))
        print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
        traceback.print_exc(limit=3)
    return fn


def input_log(d):
    return d.shell("cat /data/input.log 2>/dev/null")


def app_package(path, pkg, version=1):
    """A cells app package (docs/ADB.md): a tar with cells-manifest.prop."""
    manifest = (
        f"package={pkg}\nversionCode={version}\nversionName={version}.0\n"
        "label=Suite app\nactivity=.Main bin/main launcher\n"
    ).encode()
    script = b"#!/system/bin/sh\necho \"$CELLS_ACTIVITY\" > started\nexec sleep 100000\n"
    with tarfile.open(path, "w") as t:
        for name, data, mode in (("cells-manifest.prop", manifest, 0o644), ("bin/main", script, 0o755)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            t.addfile(info, io.BytesIO(data))


# --- setup: the server, the keys, both VPs connected -----------------------
subprocess.run([ADB, "start-server"], check=True, capture_output=True)
# The server is this suite's: it ends with the suite, however that goes.
atexit.register(lambda: subprocess.run([ADB, "kill-server"], capture_output=True))
KEY = os.path.join(WORK, ".android", "adbkey")
for vp in (A_NAME, B_NAME):
    cellctl("adb", vp, "--authorize", KEY + ".pub")
cellctl("switch", B_NAME)
adb = adbutils.AdbClient()
SERIALS = {vp: serial_of(vp) for vp in (A_NAME, B_NAME)}


def connect(vp):
    s = SERIALS[vp]

    def up():
        try:
            adb.connect(s, timeout=5)
            d = adb.device(s)
            return d if d.shell("echo up", timeout=5) == "up" else None
        except Exception:
            return None

    return wait(f"adb connect {s}", up, timeout=30, step=0.5)


A = connect(A_NAME)
B = connect(B_NAME)
print(f"adb {adb.server_version()} server on port {os.environ['ANDROID_ADB_SERVER_PORT']}; "
      f"{A_NAME}={SERIALS[A_NAME]} (background), {B_NAME}={SERIALS[B_NAME]} (foreground)", flush=True)


@check
def prop_model_is_the_vp_name():
    assert A.prop.model == A_NAME, A.prop.model
    assert B.prop.model == B_NAME, B.prop.model
    assert A.getprop("ro.build.version.sdk") == "34"
    assert A.getprop("ro.product.cpu.abi") == "x86_64"
    assert A.getprop("sys.boot_completed") == "1"
    assert A.get_state() == "device"


@check
def screenshot_is_the_vps_own_framebuffer():
    for d, vp in ((A, A_NAME), (B, B_NAME)):
        shot = d.screenshot(error_ok=False)
        ref = vp_png(vp)
        assert shot.size == ref.size, (shot.size, ref.size)
        assert shot.tobytes() == ref.tobytes(), f"{vp}: screencap differs from cellctl screenshot --vp"
    assert A.screenshot(error_ok=False).tobytes() != B.screenshot(error_ok=False).tobytes()
    # framebuffer: (adb's service) shows the same pixels.
    fb = A.framebuffer().convert("RGB")
    assert fb.tobytes() == vp_png(A_NAME).tobytes()


@check
def screencap_with_a_display_id():
    out = A.shell("dumpsys SurfaceFlinger --display-id")
    assert re.search(r"Display (\d+) ", out), out
    shot = A.screenshot(display_id=0, error_ok=False)
    assert shot.tobytes() == vp_png(A_NAME).tobytes()


@check
def window_size_rotation_and_overrides():
    w, h = A.window_size()
    ref = vp_png(A_NAME)
    assert (w, h) == ref.size, ((w, h), ref.size)
    assert A.rotation() == 0
    A.shell(f"wm size {w // 2}x{h // 2}")
    assert tuple(A.window_size()) == (w // 2, h // 2)
    assert tuple(B.window_size()) == (w, h), "A's override reached B"
    A.shell("wm size reset")
    assert tuple(A.window_size()) == (w, h)


@check
def click_reaches_the_background_vps_app_only():
    before_a, before_b = input_log(A), input_log(B)
    shot_a, panel = vp_png(A_NAME), panel_png()
    A.click(123, 456)
    # Positive control: A's persona logs the touch and draws it.
    wait("A's touch log", lambda: "ABS_MT_POSITION_X 123" in input_log(A)[len(before_a):])
    assert "ABS_MT_POSITION_Y 456" in input_log(A)[len(before_a):]
    wait("A's next screenshot to change", lambda: vp_png(A_NAME).tobytes() != shot_a.tobytes())
    # B (the foreground) and the panel saw nothing of it.
    time.sleep(0.3)
    assert input_log(B) == before_b, "A's tap reached B"
    assert panel_png().tobytes() == panel.tobytes(), "A's tap changed the panel"


@check
def click_in_the_foreground_changes_the_panel():
    before, panel = input_log(B), panel_png()
    B.click(0.5, 0.5)  # a fraction of the window, as adbutils allows
    w, h = B.window_size()
    wait("B's touch log", lambda: f"ABS_MT_POSITION_X {w // 2}" in input_log(B)[len(before):])
    wait("the panel to show B's touch", lambda: panel_png().tobytes() != panel.tobytes())


@check
def swipe_moves_the_finger():
    before = input_log(A)
    A.swipe(100, 200, 300, 400, 0.2)
    new = input_log(A)[len(before):]
    xs = [int(m) for m in re.findall(r"ABS_MT_POSITION_X (\d+)", new)]
    assert len(xs) >= 10, new[:500]
    assert xs[0] == 100 and xs[-1] == 300, xs
    assert "ABS_MT_TRACKING_ID -1" in new


@check
def keyevent_and_send_keys():
    before = input_log(A)
    A.keyevent("HOME")
    A.shell("input keyevent 4")  # BACK by number
    A.send_keys("Hi")
    new = input_log(A)[len(before):]
    assert "KEY_HOMEPAGE 1" in new and "KEY_BACK 1" in new, new
    # "Hi": shift + H (KEY_H = 35), then i (KEY_I = 23).
    assert "KEY_LEFTSHIFT 1" in new and "KEY_35 1" in new and "KEY_23 1" in new, new
    # Android's error for a key it does not know.
    r = A.shell2("input keyevent NOT_A_KEY")
    assert r.returncode != 0 and "Unknown keycode" in r.output, r


@check
def getevent_lists_the_devices_with_ranges():
    out = A.shell("getevent -p")
    assert 'name:     "cells touchscreen"' in out, out
    assert re.search(r"0035  : value \d+, min 0, max \d+", out), out
    out = A.shell("getevent -lp /dev/input/event0")
    assert "ABS_MT_POSITION_X" in out and "INPUT_PROP_DIRECT" in out, out
    # -c N ends after N events; a tap from a second shell produces them.
    t = threading.Timer(0.5, lambda: A.shell("input tap 5 5"))
    t.start()
    out = A.shell("getevent -c 4 /dev/input/event0", timeout=10)
    t.join()
    events = [x for x in out.splitlines() if re.fullmatch(r"[0-9a-f]{4} [0-9a-f]{4} [0-9a-f]{8}", x)]
    assert len(events) == 4 and out.startswith("add device 1: /dev/input/event0\n"), out


@check
def screen_state_follows_the_foreground():
    assert B.is_screen_on(), "the foreground VP's screen is off"
    assert not A.is_screen_on(), "a background VP's screen is on"


@check
def settings_are_per_vp():
    A.shell("settings put system screen_brightness 17")
    assert A.brightness_value == 17
    assert B.brightness_value != 17, "A's setting reached B"
    assert A.shell("settings get global no_such_key") == "null"


@check
def install_start_current_stop_uninstall():
    pkg = "com.example.suite"
    apk = os.path.join(WORK, "suite.apk")
    app_package(apk, pkg)
    A.install(apk, nolaunch=True, silent=True)
    assert pkg in A.list_packages(), A.list_packages()
    assert pkg not in B.list_packages(), "A's install reached B"
    assert A.app_info(pkg) and A.app_info(pkg).version_name == "1.0"
    A.app_start(pkg, ".Main")
    cur = wait("the app in front", lambda: A.app_current() if A.app_current().package == pkg else None)
    assert cur.activity in (".Main", f"{pkg}.Main"), cur
    assert A.shell(f"cat /data/data/{pkg}/started") == f"{pkg}.Main"
    assert B.app_current().package == "cells.persona"
    A.app_stop(pkg)
    assert A.app_current().package == "cells.persona"
    # monkey starts a package's launcher activity.
    A.app_start(pkg)
    wait("monkey's start", lambda: A.app_current().package == pkg)
    A.app_stop(pkg)
    # Reinstall (-r) of an upgrade, then uninstall.
    app_package(apk, pkg, version=2)
    A.install(apk, nolaunch=True, silent=True)
    assert A.app_info(pkg).version_code == 2
    A.uninstall(pkg)
    assert pkg not in A.list_packages()
    # A real Android APK (a zip) is refused with the reason.
    zapk = os.path.join(WORK, "real.apk")
    with open(zapk, "wb") as f:
        f.write(b"PK\x03\x04" + b"\0" * 100)
    A.sync.push(zapk, "/data/local/tmp/real.apk")
    out = A.shell("pm install -r -t /data/local/tmp/real.apk")
    assert "INSTALL_PARSE_FAILED_NOT_APK" in out and "cells app package" in out, out


@check
def logcat_streams():
    path = os.path.join(WORK, "logcat.txt")
    ev = A.logcat(path, clear=True, re_filter="suite-marker")
    time.sleep(0.5)
    A.shell("log -t suite suite-marker-1")
    wait("the line in the stream", lambda: "suite-marker-1" in open(path).read())
    # The stream's reader notices the stop at its next line (a phone logs
    # all the time; a quiet VP needs one more).
    ev.stop_nowait()
    A.shell("log -t suite suite-end")
    ev.stop(timeout=5)
    line = [x for x in open(path).read().splitlines() if "suite-marker-1" in x][0]
    # logcat -v time: "MM-DD HH:MM:SS.mmm I/suite   (  pid): suite-marker-1"
    assert re.match(r"\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} I/suite\s*\(\s*\d+\): suite-marker-1", line), line
    assert "suite-marker-1" not in B.shell("logcat -d"), "A's log reached B"


@check
def shell_timeout():
    t0 = time.time()
    try:
        A.shell("sleep 10", timeout=1)
        raise AssertionError("no timeout")
    except AdbTimeout:
        pass
    assert time.time() - t0 < 5


@check
def push_pull_and_list():
    local = os.path.join(WORK, "blob")
    data = os.urandom(300_000)
    open(local, "wb").write(data)
    A.sync.push(local, "/data/local/tmp/blob")
    back = os.path.join(WORK, "blob.back")
    A.sync.pull("/data/local/tmp/blob", back)
    assert open(back, "rb").read() == data
    names = [e.path for e in A.sync.list("/data/local/tmp")]
    assert "blob" in names, names
    assert "No such file" in B.shell("ls /data/local/tmp/blob 2>&1")


@check
def forward_and_reverse():
    # forward: the host reaches a server inside the VP.
    A.shell("mkdir -p /data/www && echo from-vp > /data/www/index.html")
    A.shell("(httpd -p 127.0.0.1:8080 -h /data/www &) ; sleep 0.3")
    port = free_port()
    A.forward(f"tcp:{port}", "tcp:8080")
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=5).read()
    assert body.strip() == b"from-vp", body
    A.forward_remove_all()

    # reverse: the VP reaches a server on the host.
    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"from-host\n")

        def log_message(self, *a):
            pass

    srv = HTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    A.reverse("tcp:9000", f"tcp:{srv.server_port}")
    items = A.reverse_list()
    assert any(i.remote == "tcp:9000" for i in items), items
    assert A.shell("wget -q -O - http://127.0.0.1:9000/") == "from-host"
    # B has no such forward (its loopback is its own).
    assert "from-host" not in B.shell("wget -q -T 2 -O - http://127.0.0.1:9000/ 2>&1")
    A.reverse_remove_all()
    assert not A.reverse_list()
    srv.shutdown()


@check
def adb_shell_talks_to_adbd_directly():
    from adb_shell.adb_device import AdbDeviceTcp
    from adb_shell.auth.keygen import keygen
    from adb_shell.auth.sign_pythonrsa import PythonRSASigner
    key = os.path.join(WORK, "adb_shell_key")
    if not os.path.exists(key):
        keygen(key)
    cellctl("adb", A_NAME, "--authorize", key + ".pub")
    host, port = SERIALS[A_NAME].rsplit(":", 1)
    d = AdbDeviceTcp(host, int(port), default_transport_timeout_s=10)
    d.connect(rsa_keys=[PythonRSASigner(open(key + ".pub").read(), open(key).read())], auth_timeout_s=5)
    assert d.shell("getprop ro.product.model").strip() == A_NAME
    png = d.exec_out("screencap -p", decode=False)
    assert Image.open(io.BytesIO(png)).convert("RGB").tobytes() == vp_png(A_NAME).tobytes()
    local = os.path.join(WORK, "via-adb-shell")
    open(local, "w").write("adb-shell was here\n")
    d.push(local, "/data/local/tmp/via-adb-shell")
    assert A.shell("cat /data/local/tmp/via-adb-shell") == "adb-shell was here"
    d.close()


@check
def reboot_and_reconnect():
    global A
    pid_before = cellctl("status", A_NAME, "--json")
    A.reboot()
    wait("the VP to restart", lambda: cellctl("status", A_NAME, "--json") != pid_before
         and '"running"' in cellctl("status", A_NAME, "--json"), timeout=30, step=0.5)
    A = connect(A_NAME)
    assert A.prop.model == A_NAME
    assert B.shell("echo still") == "still", "B went down with A"


passed = sum(1 for _, ok in RESULTS if ok)
failed = len(RESULTS) - passed
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
