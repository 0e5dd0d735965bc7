"""The checks run in the emulator guest (see harness.py)."""

import re
import time

from guest import PANEL_H, PANEL_W, pixel

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
COLORS = {"red": RED, "green": GREEN, "blue": BLUE}

CELLSD = ("cellsd --state-dir /var/lib/cells --run-dir /run/cells "
          "--templates-dir /mnt/host/rootfs-templates --panel fbdev:/dev/fb0")


def wait(cond, timeout, what):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def panel_color(vm, x=5, y=5):
    return pixel(vm.screendump(), x, y)


def input_log(vm, vp):
    return vm.run(f"cellctl exec {vp} -- cat /data/input.log 2>/dev/null")[1]


def positions(log, axis):
    return [int(v) for v in re.findall(rf"ABS_MT_POSITION_{axis} (-?\d+)", log)]


def start_cellsd(vm, extra=""):
    vm.ok(f"mkdir -p /run/cells; {CELLSD} {extra} >/tmp/cellsd.log 2>&1 &")
    vm.ok("for i in $(seq 300); do [ -S /run/cells/cellsd.sock ] && cellctl list >/dev/null 2>&1 && break; sleep 0.1; done; cellctl list")


def stop_cellsd(vm):
    vm.run("for v in red green blue; do cellctl stop $v --timeout 5 >/dev/null 2>&1; done")
    vm.run("kill $(cat /run/cells/cellsd.pid) 2>/dev/null; sleep 1")


def setup_vps(vm):
    vm.ok("cellctl template build minimal", timeout=300)
    for vp, col in [("red", "ff0000"), ("green", "00ff00"), ("blue", "0000ff")]:
        vm.ok(f"cellctl create {vp} --template minimal --color {col}")
        vm.ok(f"cellctl start {vp}", timeout=180)


def run_all(vm, res, bench=False):
    start_cellsd(vm)
    res.check("cellsd runs on the real panel with cgroup v2", lambda: check_daemon(vm))
    setup_vps(vm)
    res.check("panel (QMP screendump) shows the foreground VP's colour", lambda: check_panel_shows_fg(vm))
    res.check("after cellctl switch the panel shows the new foreground", lambda: check_switch(vm))
    res.check("VP input devices are uinput evdev devices; host devices are grabbed", lambda: check_uinput(vm))
    res.check("a QMP tablet tap reaches only the foreground VP's /data/input.log", lambda: check_tap(vm))
    res.check("a key held across a switch is released in the old foreground", lambda: check_key_release(vm))
    res.check("each VP has its own binder device as /dev/binder", lambda: check_binder(vm))
    res.check("VP cgroups on cgroup v2 with limits", lambda: check_cgroup_v2(vm))
    stop_cellsd(vm)


def check_daemon(vm):
    out = vm.ok("cellctl display")
    assert "fbdev /dev/fb0 (bochs-drmdrmfb) 720x1280" in out, out
    assert "virtio" in out.lower(), f"no grabbed host input device listed:\n{out}"
    out = vm.ok("cat /tmp/cellsd.log")
    assert "cellsd ready" in out, out


def check_panel_shows_fg(vm):
    fg = vm.ok("cellctl foreground").strip()
    assert fg == "red", fg
    wait(lambda: panel_color(vm) == RED, 30, "the panel to show red")
    # Bottom right too: the whole panel is the VP's frame.
    assert panel_color(vm, PANEL_W - 1, PANEL_H - 1) == RED


def check_switch(vm):
    for vp in ["green", "blue", "red", "green"]:
        vm.ok(f"cellctl switch {vp}")
        wait(lambda: panel_color(vm) == COLORS[vp], 10, f"the panel to show {vp}")
        assert vm.ok("cellctl foreground").strip() == vp


def check_uinput(vm):
    out = vm.ok("cellctl exec red -- ls -l /dev/input/")
    assert re.search(r"^c.* 13,\s*\d+ .*event0", out, re.M), out
    devices = vm.ok("cat /proc/bus/input/devices")
    assert devices.count('N: Name="cells touchscreen"') == 3, devices
    assert devices.count('N: Name="cells keys"') == 3, devices
    out = vm.ok("cellctl display")
    assert "QEMU Virtio Tablet" in out or "Tablet" in out, out


def check_tap(vm):
    vm.ok("cellctl switch blue")
    for vp in COLORS:
        vm.run(f"cellctl exec {vp} -- sh -c ': > /data/input.log'")
    vm.tap(300, 500)
    wait(lambda: "BTN_TOUCH 0" in input_log(vm, "blue"), 20, "the tap in blue's log")
    log = input_log(vm, "blue")
    xs, ys = positions(log, "X"), positions(log, "Y")
    assert xs and ys, log
    assert abs(xs[0] - 300) <= 2 and abs(ys[0] - 500) <= 2, (xs, ys)
    for vp in ["red", "green"]:
        assert "ABS_MT" not in input_log(vm, vp), f"{vp} got the tap"


def check_key_release(vm):
    vm.ok("cellctl switch red")
    for vp in COLORS:
        vm.run(f"cellctl exec {vp} -- sh -c ': > /data/input.log'")
    vm.key("a", True)  # KEY_A (30), held
    wait(lambda: "EV_KEY KEY_30 1" in input_log(vm, "red"), 20, "the key press in red")
    vm.ok("cellctl switch green")
    wait(lambda: "EV_KEY KEY_30 0" in input_log(vm, "red"), 20, "the release in red")
    vm.key("a", False)
    time.sleep(1)
    assert "KEY_30" not in input_log(vm, "green"), input_log(vm, "green")
    vm.key("b", True)
    vm.key("b", False)
    wait(lambda: "EV_KEY KEY_48 0" in input_log(vm, "green"), 20, "the next key in green")


def check_binder(vm):
    nodes = {}
    for vp in COLORS:
        out = vm.ok(f"cellctl exec {vp} -- stat -c '%t:%T' /dev/binder")
        nodes[vp] = out.strip()
    assert len(set(nodes.values())) == 3, f"binder devices shared: {nodes}"
    # Each VP can become its binder's context manager: no other VP holds it.
    for vp in COLORS:
        out = vm.ok(f"cellctl exec {vp} -- /system/bin/binder-check")
        assert "context manager: ok" in out, out


def check_cgroup_v2(vm):
    out = vm.ok("cat /sys/fs/cgroup/cells/red/pids.max /sys/fs/cgroup/cells/red/cgroup.procs")
    lines = out.split()
    assert lines[0] == "4096", out
    assert len(lines) >= 2, out
    ctl = vm.ok("cat /sys/fs/cgroup/cells/cgroup.subtree_control")
    for c in ["memory", "pids", "cpu"]:
        assert c in ctl, ctl
