"""The checks run in the emulator guest (see harness.py)."""

import json
import re
import time

from guest import PANEL_H, PANEL_W, pixel

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
COLORS = {"red": RED, "green": GREEN, "blue": BLUE}

CELLSD = ("PATH=/mnt/host/criu/bin:$PATH cellsd --criu /mnt/host/criu/run "
          "--state-dir /var/lib/cells --run-dir /run/cells "
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
    rc, out = vm.run("for i in $(seq 300); do [ -S /run/cells/cellsd.sock ] && cellctl list >/dev/null 2>&1 && break; sleep 0.1; done; cellctl list")
    if rc != 0:
        raise AssertionError(f"cellsd {extra} did not come up:\n{out}\n{vm.run('cat /tmp/cellsd.log')[1]}")


def stop_cellsd(vm):
    vm.run("for v in red green blue; do cellctl stop $v --timeout 5 >/dev/null 2>&1; done")
    vm.run("kill $(cat /run/cells/cellsd.pid) 2>/dev/null; sleep 1")


def setup_vps(vm):
    vm.ok("cellctl template build minimal", timeout=300)
    for vp, col in [("red", "ff0000"), ("green", "00ff00"), ("blue", "0000ff")]:
        vm.ok(f"cellctl create {vp} --template minimal --color {col}")
        vm.ok(f"cellctl start {vp}", timeout=180)


def run_all(vm, res, bench=False):
    # Before cellsd runs (it would grab the device): the control of the
    # VP-keys check below.
    res.check("control: keys from a uinput device reach the host's sysrq handler", lambda: check_uinput_reaches_sysrq(vm))
    # A real LED and backlight class device (a test fixture module), there
    # before cellsd looks for the host's lights.
    res.check("a real LED and backlight class device (fixture) load", lambda: check_lights_fixture(vm))
    res.check("cellctl doctor: binder, uinput, cgroup v2 and the rest found on the device's kernel", lambda: check_doctor(vm))
    start_cellsd(vm)
    res.check("cellsd runs on the real panel with cgroup v2", lambda: check_daemon(vm))
    setup_vps(vm)
    res.check("panel (QMP screendump) shows the foreground VP's colour", lambda: check_panel_shows_fg(vm))
    res.check("after cellctl switch the panel shows the new foreground", lambda: check_switch(vm))
    res.check("VP input devices are evdev devices of their monitor, none is a host input device; host devices are grabbed", lambda: check_evdev(vm))
    res.check("what a VP writes to its keys (Alt+SysRq+H, KEY_POWER) reaches no host consumer", lambda: check_keys_reach_no_host(vm))
    res.check("a QMP tablet tap reaches only the foreground VP's /data/input.log", lambda: check_tap(vm))
    res.check("a key held across a switch is released in the old foreground", lambda: check_key_release(vm))
    res.check("each VP has its own binder device as /dev/binder", lambda: check_binder(vm))
    res.check("every VP becomes its binder context manager on every start (a new VP never gets another's used device)", lambda: check_binder_every_start(vm))
    res.check("VP cgroups on cgroup v2 with limits", lambda: check_cgroup_v2(vm))
    res.check("each VP's /sys/power (FUSE) on the device's kernel: own locks, aggregated", lambda: check_power(vm))
    res.check("the cgroup v2 freezer freezes a background VP; a switch thaws it", lambda: check_freezer_v2(vm))
    res.check("logind backend: a sleep inhibitor (elogind) exactly while a VP holds a lock", lambda: check_logind(vm))
    res.check("VP networks on the device's kernel: eth0 on the bridge, port isolation without nft", lambda: check_network(vm))
    res.check("live checkpoint/restore (CRIU): processes continue (counter, file offset, pids), screen, wakelock, network and console re-attached", lambda: check_live_restore(vm))
    res.check("live move to another device: a VP checkpointed into the host's share for the second guest", lambda: prepare_guest_move(vm))
    res.check("live move (CRIU) to a second cellsd and back (checkpoint -o, restore FILE, move --live): processes, data, wakelock go on; that cellsd's ids and address; root only", lambda: check_live_move(vm))
    if bench:
        res.check("benchmarks: live checkpoint/restore", lambda: bench_live_restore(vm))
        res.check("benchmarks: live move to a second cellsd", lambda: bench_live_move(vm))
    res.check("the foreground VP truncating, growing or mapping past its framebuffer does not reach cellsd", lambda: check_fb_attack(vm, kernel=False))
    res.check("lights: the foreground's writes reach a real LED and backlight; a background VP's are replayed when it comes to the front", lambda: check_lights(vm))
    res.check("sensors: Debian's evtest reads the foreground VP's accelerometer", lambda: check_evtest_accel(vm))
    res.check("clock: the foreground VP sets the device's clock, every VP sees it; a background VP is refused", lambda: check_clock(vm))
    res.check("audio: the foreground's playback reaches the real sound card (and only it); after a switch the other's", lambda: check_speaker(vm))
    res.check("telephony: the cellular modem on a real UART (ttyS1): its calls and messages reach only the VP that has the line", lambda: check_modem(vm))
    userspace_switch = switch_times(vm) if bench else None
    stop_cellsd(vm)

    # The mux_fb kernel module.
    res.check("the mux_fb module loads against the real panel", lambda: check_module_loads(vm))
    # A host accelerometer (uinput) there when cellsd starts.
    vm.ok("(cells-probe uinput-accel 1000 120 > /tmp/accel.log 2>&1 &); sleep 1; cat /tmp/accel.log")
    start_cellsd(vm)
    res.check("sensors: a host accelerometer (uinput) feeds the foreground VP", lambda: check_host_accel(vm))
    res.check("cellsd uses the kernel module where it is loaded", lambda: check_kernel_mode(vm))
    res.check("with mux_fb: the panel shows the foreground, switches follow", lambda: (check_panel_shows_fg(vm), check_switch(vm)))
    res.check("with mux_fb: a QMP tap still reaches only the foreground", lambda: check_tap(vm, 420, 880))
    res.check("with mux_fb: an unmodified Debian fbdev program (fbcat) works in a VP", lambda: check_fbcat(vm))
    res.check("with mux_fb: a background VP's screencap is its own mux_fb frame; its input tap reaches it, not the foreground", lambda: check_toolbox(vm))
    res.check("with mux_fb: FBIOPUT_VSCREENINFO is limited to the panel's mode", lambda: check_mode_locked(vm))
    res.check("with mux_fb: no frame of a background VP ever reaches the panel", lambda: check_no_background_frames(vm))
    res.check("with mux_fb: a background VP's FBIOBLANK never reaches the panel", lambda: check_blank(vm))
    res.check("with mux_fb: truncating or mapping past a VP framebuffer is refused, cellsd unharmed", lambda: check_fb_attack(vm, kernel=True))
    res.check("with mux_fb: unloading is refused while VPs map their framebuffers", lambda: check_unload_refused(vm))
    if bench:
        res.check("benchmarks", lambda: run_benchmarks(vm, userspace_switch))
    stop_cellsd(vm)
    res.check("with no VP left, mux_fb unloads", lambda: check_unload(vm))


def check_unload(vm):
    rc, out = vm.run("rmmod mux_fb && ! [ -e /dev/mux_fb ]")
    if rc != 0:
        debug = vm.run("lsmod | grep mux_fb; cat /proc/fb; ls -l /proc/[0-9]*/fd 2>/dev/null | grep -E 'fb[0-9]|mux_fb'; "
                       "cat /sys/class/vtconsole/*/bind; dmesg | tail -20")[1]
        raise AssertionError(f"{out}\n{debug}")


def stop_all(vm):
    vm.run("for v in $(cellctl list --json | grep '\"name\"' | cut -d'\"' -f4); do cellctl stop $v --timeout 5; done")


def check_module_loads(vm):
    vm.ok("insmod /mnt/host/mux_fb.ko")
    out = vm.ok("ls -l /dev/mux_fb; dmesg | grep mux_fb | tail -1")
    assert "multiplexing /dev/fb0" in out, out
    assert "crw-------" in out, out


def check_kernel_mode(vm):
    out = vm.ok("cellctl display")
    assert "via the mux_fb kernel module" in out, out
    # The VPs are the same three, started again, now on mux_fb devices.
    for vp in COLORS:
        vm.ok(f"cellctl start {vp}", timeout=180)
    out = vm.ok("cat /proc/fb")
    assert out.count("mux_fb") == 3, out
    dev = vm.ok("cellctl exec red -- ls -l /dev/fb0")
    assert re.search(r"^c.* 29,\s*\d+ ", dev, re.M), f"not an fbdev device: {dev}"


def fbcat_image(vm, vp):
    """Run fbcat (Debian's, unmodified) in a VP on its /dev/fb0; the image."""
    vm.ok(f"cellctl exec {vp} -- sh -c '/usr/bin/fbcat /dev/fb0 > /data/shot.ppm'")
    vm.ok(f"cellctl exec {vp} -- cat /data/shot.ppm > /mnt/host/shot.ppm")
    data = (vm.share / "shot.ppm").read_bytes()
    m = re.match(rb"P6\s+(\d+)\s+(\d+)\s+(\d+)\s", data)
    assert m, data[:40]
    return int(m.group(1)), int(m.group(2)), data[m.end():]


def check_fbcat(vm):
    vm.ok("cellctl template build fbtools", timeout=300)
    vm.ok("cellctl create fbv --template fbtools --color ff00ff")
    vm.ok("cellctl start fbv", timeout=180)
    # Background: fbcat sees the VP's own frame (magenta), not the panel.
    vm.ok("cellctl switch red")
    wait(lambda: pixel(fbcat_image(vm, "fbv"), 5, 5) == (255, 0, 255), 30,
         "fbcat in background fbv to read its magenta frame")
    img = fbcat_image(vm, "fbv")
    assert (img[0], img[1]) == (720, 1280), img[:2]
    assert panel_color(vm) == RED, "the panel changed"
    # Foreground: the same program reads the panel, which shows fbv.
    vm.ok("cellctl switch fbv")
    wait(lambda: panel_color(vm) == (255, 0, 255), 10, "the panel to show fbv")
    assert pixel(fbcat_image(vm, "fbv"), 5, 5) == (255, 0, 255)
    vm.ok("cellctl switch red")
    vm.ok("cellctl stop fbv")


def check_mode_locked(vm):
    # FBIOPUT_VSCREENINFO through the persona's --set-mode.
    rc, out = vm.run("cellctl exec red -- persona --set-mode 640x480")
    assert rc != 0 and "Invalid argument" in out, f"a foreign mode was accepted: {out}"
    out = vm.ok("cellctl exec red -- persona --set-mode 720x1280")
    assert "720x1280: ok" in out, out


def check_no_background_frames(vm):
    vm.ok("cellctl switch green")
    # Both redraw all the time: red (background) and green (foreground).
    vm.ok("cellctl exec red -- sh -c 'persona --animate --frames 100000 >/dev/null 2>&1 &'")
    vm.ok("cellctl exec green -- sh -c 'persona --animate --frames 100000 >/dev/null 2>&1 &'")
    time.sleep(2)
    bad = []
    for i in range(40):
        img = vm.screendump()
        for (x, y) in [(5, 5), (360, 640), (700, 1270), (100, 1000)]:
            r, gch, b = pixel(img, x, y)
            if r > 60 and gch < 60:
                bad.append((i, x, y, (r, gch, b)))
        time.sleep(0.05)
    vm.run("cellctl exec red -- killall persona; cellctl exec green -- killall persona")
    assert not bad, f"red (background) reached the panel: {bad[:5]}"


def check_blank(vm):
    vm.ok("cellctl switch green")
    wait(lambda: panel_color(vm)[1] > 100, 10, "green on the panel")
    vm.ok("cellctl exec red -- persona --blank on")
    time.sleep(1)
    assert panel_color(vm)[1] > 100, "the background VP blanked the panel"
    # The foreground may: the panel goes dark, and comes back.
    vm.ok("cellctl exec green -- persona --blank on")
    wait(lambda: panel_color(vm) == (0, 0, 0), 10, "the foreground's blank to reach the panel")
    vm.ok("cellctl exec green -- persona --blank off")
    wait(lambda: panel_color(vm)[1] > 100, 10, "the panel to come back")
    vm.run("cellctl exec red -- persona --blank off")


def check_unload_refused(vm):
    # cellsd ends (VPs keep running, their personas map their framebuffers).
    vm.run("kill $(cat /run/cells/cellsd.pid); sleep 1")
    rc, out = vm.run("rmmod mux_fb")
    assert rc != 0, f"rmmod succeeded while VPs map their framebuffers: {out}"
    assert vm.ok("lsmod | grep -c '^mux_fb'").strip() == "1"
    start_cellsd(vm)
    assert vm.ok("cellctl status red --json").count('"running"') == 1


def switch_times(vm, n=40):
    """Mean of the switch time the daemon measures (request -> panel)."""
    times = []
    order = ["red", "green", "blue"]
    for i in range(n):
        vm.ok(f"cellctl switch {order[i % 3]}")
        info = vm.ok("cellctl display --json")
        m = re.search(r'"last_switch_us": (\d+)', info)
        times.append(int(m.group(1)))
    times.sort()
    return times


def run_benchmarks(vm, userspace):
    kernel = switch_times(vm)
    med = lambda v: v[len(v) // 2]  # noqa: E731
    print(f"BENCH switch (request -> panel updated), guest, {len(kernel)} switches: "
          f"mux_fb p50 {med(kernel)} us, userspace mux p50 {med(userspace)} us, "
          f"ratio {med(kernel) / max(med(userspace), 1):.2f}x", flush=True)
    vm.ok("cellctl switch green")
    through = vm.ok("cellctl exec green -- persona --draw-bench 5")
    for vp in COLORS:
        vm.run(f"cellctl stop {vp} --timeout 5")
    direct = vm.ok("cells-persona --draw-bench 5 /dev/fb0")
    f = lambda s: float(re.search(r"([\d.]+) frames/s", s).group(1))  # noqa: E731
    print(f"BENCH foreground draw throughput, guest: through mux_fb {f(through):.1f} frames/s, "
          f"real /dev/fb0 directly {f(direct):.1f} frames/s, ratio {f(through) / f(direct):.2f}x", flush=True)
    for vp in COLORS:
        vm.ok(f"cellctl start {vp}", timeout=180)


def power(vm):
    return json.loads(vm.ok("cellctl power --json"))


def in_vp(vm, vp, script):
    return vm.run(f"cellctl exec {vp} -- sh -c '{script}'")


def check_power(vm):
    fg = vm.ok("cellctl foreground").strip()
    bg = next(v for v in COLORS if v != fg)
    assert in_vp(vm, bg, "echo music > /sys/power/wake_lock")[0] == 0
    rc, out = in_vp(vm, fg, "cat /sys/power/wake_lock")
    assert rc == 0 and "music" not in out, out
    rc, out = in_vp(vm, fg, "echo music > /sys/power/wake_unlock")
    assert rc != 0 and "Invalid argument" in out, out
    wait(lambda: power(vm)["blocked_by"] == [bg], 10, f"{bg} to block suspend")
    # Early suspend: the background VP's framebuffer sleeps, the foreground's is awake.
    assert in_vp(vm, bg, "cat /sys/power/wait_for_fb_sleep")[1].strip() == "sleeping"
    assert in_vp(vm, fg, "cat /sys/power/wait_for_fb_wake")[1].strip() == "awake"
    # A background suspend request is ignored.
    in_vp(vm, bg, "echo mem > /sys/power/state")
    wait(lambda: power(vm)["ignored_requests"] >= 1, 10, "the ignored request")
    assert power(vm)["screen"] == "on"
    assert in_vp(vm, bg, "echo music > /sys/power/wake_unlock")[0] == 0
    wait(lambda: not power(vm)["suspend_blocked"], 10, "suspend allowed again")


def bench_live_restore(vm):
    """Checkpoint + restore (the downtime of a live move) of an idle VP and
    of one holding 200 MiB of anonymous memory, image sizes; peer: a cold
    stop + start of the same VP (which loses its processes' state)."""
    vp = "benchlive"
    vm.ok(f"cellctl create {vp} --template minimal --disk none", timeout=60)
    vm.ok(f"cellctl start {vp}", timeout=180)

    def ms(cmd):
        # Timed from here (the serial console's round trip is in both).
        t0 = time.time()
        vm.ok(cmd, timeout=600)
        return (time.time() - t0) * 1000
    try:
        for label, mib in [("idle", 0), ("200 MiB anonymous", 200)]:
            if mib:
                vm.ok(f"cellctl exec {vp} -- sh -c \"setsid awk 'BEGIN {{ s = \\\"x\\\"; while (length(s) < {mib} * 1048576) s = s s; "
                      f"s = substr(s, 1, {mib} * 1048576); system(\\\"sleep 100000\\\") }}' </dev/null >/dev/null 2>&1 &\"")
                wait(lambda: int(vm.ok(f"cat /sys/fs/cgroup/cells/{vp}/memory.current")) > mib << 20, 120,
                     f"{mib} MiB held in {vp}")
            mem = int(vm.ok(f"cat /sys/fs/cgroup/cells/{vp}/memory.current")) >> 20
            dump = ms(f"cellctl checkpoint {vp}")
            size = int(vm.ok(f"du -sk /var/lib/cells/vps/{vp}/checkpoint/images | cut -f1")) / 1024
            rest = ms(f"cellctl restore {vp}")
            cold = ms(f"cellctl stop {vp} --timeout 5") + ms(f"cellctl start {vp}")
            print(f"BENCH live checkpoint/restore, guest (TCG), {label} VP ({mem} MiB in its cgroup): "
                  f"checkpoint {dump:.0f} ms, restore {rest:.0f} ms, downtime {dump + rest:.0f} ms, images {size:.1f} MiB; "
                  f"cold stop+start {cold:.0f} ms, ratio {(dump + rest) / max(cold, 1):.2f}x", flush=True)
    finally:
        vm.run(f"cellctl stop {vp} --timeout 5; cellctl destroy {vp}", timeout=120)


def check_live_restore(vm):
    vp = "mover"
    vm.ok(f"cellctl create {vp} --template minimal --disk none --color 123456", timeout=60)
    vm.ok(f"cellctl start {vp}", timeout=180)
    try:
        _live_restore(vm, vp)
    finally:
        vm.run(f"cellctl stop {vp} --timeout 5; cellctl destroy {vp}", timeout=120)


def loop_pids(vm, vp, markers=("while true",), ctl="cellctl"):
    """The pids of the VP's processes whose command line has a marker,
    without their own forks that have not exec'd yet (a shell loop's child
    on its way to `sleep` shows the loop's command line for a moment)."""
    rows = []
    for line in vm.run(f"{ctl} exec {vp} -- ps -o pid,ppid,args")[1].splitlines()[1:]:
        parts = line.split(None, 2)
        if len(parts) == 3 and any(m in parts[2] for m in markers):
            rows.append((parts[0], parts[1]))
    mine = {p for p, _ in rows}
    return sorted(p for p, pp in rows if pp not in mine)


def mounts_locked(vm, vp, ctl="cellctl"):
    """What VP root can do to the masks over /proc and /sys (a fresh VP:
    nothing: they are locked), with the control that it can mount and
    unmount a file system of its own."""
    script = ("mkdir -p /tmp/own && mount -t tmpfs own /tmp/own && umount /tmp/own && echo own-ok; "
              "umount /proc/acpi 2>/dev/null && echo acpi-unmounted; "
              "umount /sys/firmware 2>/dev/null && echo firmware-unmounted; "
              "mount -o remount,bind,rw /proc/sys 2>/dev/null && echo sys-writable; "
              "umount /proc/sys 2>/dev/null && echo sys-unmounted; "
              "mount -t proc proc /tmp/own 2>/dev/null && echo new-proc; "
              "grep -c . /proc/self/mountinfo")
    out = vm.run(f"{ctl} exec {vp} -- sh -c '{script}'")[1].split()
    assert "own-ok" in out, f"control: VP root mounts and unmounts its own tmpfs: {out}"
    return out


def _live_restore(vm, vp):
    count = lambda: int(in_vp(vm, vp, "cat /data/count")[1].strip() or 0)  # noqa: E731
    in_vp(vm, vp, "seq 1 1000 > /data/lines")
    vm.ok(f"cellctl exec {vp} -- sh -c \"setsid sh -c \\\"i=0; while true; do i=\\\\\\$((i+1)); "
          f"echo \\\\\\$i > /data/count; sleep 0.1; done\\\" </dev/null >/dev/null 2>&1 &\"")
    # A reader holding an offset: three lines read, the fourth after the restore.
    vm.ok(f"cellctl exec {vp} -- sh -c \"setsid sh -c \\\"exec 3</data/lines; read a <&3; read a <&3; "
          f"read a <&3; while [ ! -e /data/go ]; do sleep 0.1; done; read a <&3; echo \\\\\\$a > /data/next; "
          f"sleep 100000\\\" </dev/null >/dev/null 2>&1 &\"")
    assert in_vp(vm, vp, "echo keepme > /sys/power/wake_lock")[0] == 0
    wait(lambda: count() > 3, 20, "the counter to run")
    pids = in_vp(vm, vp, "ps -o pid,args | grep -E \"sleep 0.1|sleep 100000\" | grep -v grep | wc -l")[1]
    before_ps = loop_pids(vm, vp, ("while true", "exec 3<"))
    assert len(before_ps) == 2, (pids, before_ps)
    ip = vm.ok(f"cellctl list | awk '$1==\"{vp}\"{{print $6}}'").strip()
    # The screen: what the persona drew (its colour), hashed.
    fb = "md5sum /run/cells/vps/mover/dev/fb0 2>/dev/null || true"
    mon = lambda: vm.ok(f"cat /run/cells/vps/{vp}/run.json | tr -d ' \\n' | sed 's/.*monitor_pid.:\\([0-9]*\\).*/\\1/'").strip()  # noqa: E731
    shot1 = vm.ok(f"nsenter -t {mon()} -m sh -c '{fb}'").split()[0]
    mounts_before = sorted(filter(None, in_vp(vm, vp, "cat /proc/self/mountinfo | cut -d\\  -f4,5,9-")[1].splitlines()))
    locked_before = mounts_locked(vm, vp)
    assert locked_before[:-1] == ["own-ok"], f"a fresh VP's masks are locked: {locked_before}"
    out = vm.ok(f"cellctl checkpoint {vp}", timeout=300)
    assert "checkpointed" in out, out
    assert f"{vp} " in vm.ok("cellctl list") and "stopped" in vm.ok(f"cellctl list | grep '^{vp} '"), vm.ok("cellctl list")
    out = vm.ok(f"cellctl restore {vp}", timeout=300)
    assert "restored" in out, out
    after_ps = loop_pids(vm, vp, ("while true", "exec 3<"))
    assert after_ps == before_ps, (before_ps, after_ps)
    c1 = count()
    wait(lambda: count() > c1 + 3, 20, "the restored counter to go on")
    assert c1 >= 3, c1
    in_vp(vm, vp, "touch /data/go")
    wait(lambda: in_vp(vm, vp, "cat /data/next")[1].strip() == "4", 20, "the reader to read its 4th line")
    assert "keepme" in in_vp(vm, vp, "cat /sys/power/wake_lock")[1]
    shot2 = vm.ok(f"nsenter -t {mon()} -m sh -c '{fb}'").split()[0]
    assert shot1 == shot2, (shot1, shot2)
    # Network: the VP's address is this device's again; console: a new session.
    assert ip in in_vp(vm, vp, "ip addr show eth0")[1], ip
    wait(lambda: "sh -l" in in_vp(vm, vp, "ps -o args")[1], 20, "the console shell to be started again")
    # The same mounts as before (nothing of the restoring monitor's tree
    # below or beside them: its proc and sysfs are the host's).
    mounts_after = sorted(filter(None, in_vp(vm, vp, "cat /proc/self/mountinfo | cut -d\\  -f4,5,9-")[1].splitlines()))
    assert len(mounts_before) > 20 and mounts_after == mounts_before, (mounts_before, mounts_after)
    # Its masks and read-only paths locked as a fresh VP's are.
    assert mounts_locked(vm, vp) == locked_before, (locked_before, mounts_locked(vm, vp))
    # Isolation as before: the VP sees only its own processes.
    procs = in_vp(vm, vp, "ls /proc 2>/dev/null | grep -c '^[0-9]'")[1].strip()
    assert int(procs) < 20, procs
    assert vm.run(f"cellctl restore {vp}")[0] != 0


# A second cellsd on the same device (its own state, run dir, id range,
# bridge, subnet, ports and cgroup; a memory panel, no host input or sound):
# the other end of a live move.
B_CELLSD = (CELLSD.replace("--state-dir /var/lib/cells --run-dir /run/cells",
                           "--state-dir /var/lib/cells-b --run-dir /run/cells-b")
            .replace("--panel fbdev:/dev/fb0", "--panel headless:720x1280")
            + " --id-base 3000000 --bridge cellsb --subnet 10.48.0.0/16 --adb-port-base 7700"
              " --cgroup-parent cellsb --input-dir /tmp/no-input --audio-output none --power-backend none")
B = "CELLS_SOCKET=/run/cells-b/cellsd.sock cellctl"
# What ssh would run on the other host, run here (the second cellsd is on
# this device): `cellctl move` builds the same command line either way.
LOCAL_SSH = '#!/bin/sh\\nwhile [ "$1" != -- ]; do shift; done; shift; exec sh -c "$1"\\n'


def start_b(vm):
    # Its state on the device's ext4 disk too (the guest's root is a tmpfs,
    # which has idmapped mounts only from Linux 6.3 on).
    vm.ok("mkdir -p /var/lib/cells-b /var/lib/cells/.other-cellsd; mountpoint -q /var/lib/cells-b "
          "|| mount --bind /var/lib/cells/.other-cellsd /var/lib/cells-b")
    vm.ok(f"mkdir -p /run/cells-b /tmp/no-input; {B_CELLSD} >/tmp/cellsd-b.log 2>&1 & echo $! > /tmp/cellsd-b.pid")
    rc, out = vm.run(f"for i in $(seq 300); do {B} list >/dev/null 2>&1 && break; sleep 0.1; done; {B} list")
    if rc != 0:
        raise AssertionError(f"the second cellsd did not come up:\n{out}\n{vm.run('cat /tmp/cellsd-b.log')[1]}")


def stop_b(vm, vps):
    for vp in vps:
        vm.run(f"for c in cellctl '{B}'; do eval \"$c stop {vp} --timeout 5; $c destroy {vp}\"; done", timeout=120)
    vm.run("kill $(cat /tmp/cellsd-b.pid); while [ -e /run/cells-b/cellsd.sock ]; do sleep 0.1; done")


def remove_b(vm):
    vm.run("umount /var/lib/cells-b; rm -rf /var/lib/cells/.other-cellsd /run/cells-b", timeout=120)


def check_live_move(vm):
    vp = "traveller"
    # An operator in the cells group (control: may use cellsd B) — not root.
    vm.ok("echo cells:x:990: >> /etc/group; echo op:x:1234:990::/tmp:/bin/sh >> /etc/passwd")
    try:
        start_b(vm)
        _live_move(vm, vp)
    finally:
        stop_b(vm, [vp])
        remove_b(vm)
        vm.run("sed -i '/^cells:/d' /etc/group; sed -i '/^op:/d' /etc/passwd")


def bench_live_move(vm):
    """A live move to a second cellsd on the device (checkpoint -o FILE here,
    restore FILE there): downtime and archive size for an idle VP and one
    holding 200 MiB of anonymous memory; peer: a cold move of the same VP
    (stop, export, import, start), which loses its processes' state."""
    vp = "benchmove"

    def ms(cmd):
        t0 = time.time()
        vm.ok(cmd, timeout=900)
        return (time.time() - t0) * 1000
    start_b(vm)
    try:
        for label, mib in [("idle", 0), ("200 MiB anonymous", 200)]:
            vm.ok(f"cellctl create {vp} --template minimal --disk 256M", timeout=120)
            vm.ok(f"cellctl start {vp}", timeout=180)
            if mib:
                vm.ok(f"cellctl exec {vp} -- sh -c \"setsid awk 'BEGIN {{ s = \\\"x\\\"; while (length(s) < {mib} * 1048576) s = s s; "
                      f"s = substr(s, 1, {mib} * 1048576); system(\\\"sleep 100000\\\") }}' </dev/null >/dev/null 2>&1 &\"")
                wait(lambda: int(vm.ok(f"cat /sys/fs/cgroup/cells/{vp}/memory.current")) > mib << 20, 120,
                     f"{mib} MiB held in {vp}")
            dump = ms(f"cellctl checkpoint {vp} -o /tmp/{vp}.cellsvp")
            size = int(vm.ok(f"stat -c %s /tmp/{vp}.cellsvp")) / (1 << 20)
            vm.ok(f"cellctl destroy {vp}", timeout=120)
            rest = ms(f"{B} restore /tmp/{vp}.cellsvp")
            vm.ok(f"rm -f /tmp/{vp}.cellsvp")
            cold = (ms(f"{B} stop {vp} --timeout 5") + ms(f"{B} export {vp} -o /tmp/{vp}.cold")
                    + ms(f"cellctl import /tmp/{vp}.cold") + ms(f"cellctl start {vp}"))
            csize = int(vm.ok(f"stat -c %s /tmp/{vp}.cold")) / (1 << 20)
            vm.ok(f"rm -f /tmp/{vp}.cold")
            print(f"BENCH live move to a second cellsd, guest (TCG), {label} VP (256 MiB disk): "
                  f"checkpoint+archive {dump:.0f} ms, import+restore {rest:.0f} ms, downtime {dump + rest:.0f} ms, "
                  f"archive {size:.1f} MiB; cold move (stop, export, import, start) {cold:.0f} ms, "
                  f"archive {csize:.1f} MiB; ratio {(dump + rest) / max(cold, 1):.2f}x", flush=True)
            stop_b(vm, [vp])
            start_b(vm)
    finally:
        stop_b(vm, [vp])
        remove_b(vm)


def _live_move(vm, vp):
    def run_in(ctl, script):
        return vm.run(f"{ctl} exec {vp} -- sh -c '{script}'")

    def count(ctl):
        return int(run_in(ctl, "cat /data/count")[1].strip() or 0)

    def counter_pids(ctl):
        return loop_pids(vm, vp, ctl=ctl)

    def init_uid_map(ctl):
        pid = json.loads(vm.ok(f"{ctl} status {vp} --json"))["pid"]
        return vm.ok(f"cat /proc/{pid}/uid_map").split()

    vm.ok(f"cellctl create {vp} --template minimal --disk 256M --color 345678", timeout=120)
    vm.ok(f"cellctl start {vp}", timeout=180)
    vm.ok(f"cellctl exec {vp} -- sh -c \"dd if=/dev/urandom of=/data/blob bs=1M count=8 2>/dev/null; "
          f"setsid sh -c \\\"i=0; while true; do i=\\\\\\$((i+1)); echo \\\\\\$i > /data/count; sleep 0.1; done\\\" "
          f"</dev/null >/dev/null 2>&1 &\"")
    assert run_in("cellctl", "echo keepme > /sys/power/wake_lock")[0] == 0
    wait(lambda: count("cellctl") > 3, 20, "the counter to run")
    blob = run_in("cellctl", "md5sum /data/blob")[1].split()[0]
    pids = counter_pids("cellctl")
    map_a = init_uid_map("cellctl")
    assert len(pids) == 1 and map_a[0] == "0", (pids, map_a)
    def mount_table(ctl):
        # Mount points and their options (sources name each host's paths).
        return sorted(filter(None, run_in(ctl, "cut -d\\  -f5,6 /proc/self/mountinfo")[1].splitlines()))
    mounts_a = mount_table("cellctl")

    # Here: checkpointed into an archive (the VP stops here).
    out = vm.ok(f"cellctl checkpoint {vp} -o /tmp/{vp}.cellsvp", timeout=300)
    assert "checkpointed" in out, out
    assert json.loads(vm.ok(f"cellctl status {vp} --json"))["state"] == "stopped"
    # Images are root's to give: the cells group's operator may not bring
    # them in (control: the same operator may use that cellsd).
    vm.ok(f"cp /tmp/{vp}.cellsvp /tmp/op.cellsvp; chmod 644 /tmp/op.cellsvp")
    def op(args):
        return vm.run(f"su op -s /bin/sh -c 'id -u; CELLS_SOCKET=/run/cells-b/cellsd.sock cellctl {args}' 2>&1")
    rc, out = op("list")
    assert rc == 0 and out.split()[0] == "1234", f"control: the operator may use cellsd B: {out}"
    rc, out = op("restore /tmp/op.cellsvp")
    assert rc != 0 and "only root may import" in out, out
    assert vp not in vm.ok(f"{B} list"), "a refused import left a VP behind"

    # There: imported and restored by root.
    out = vm.ok(f"{B} restore /tmp/{vp}.cellsvp", timeout=600)
    assert "restored" in out, out
    assert json.loads(vm.ok(f"{B} status {vp} --json"))["state"] == "running"
    assert counter_pids(B) == pids, (pids, counter_pids(B))
    c1 = count(B)
    assert c1 > 3, c1
    wait(lambda: count(B) > c1 + 3, 30, "the moved counter to go on")
    moved = run_in(B, "md5sum /data/blob")[1]
    assert moved.split()[0] == blob, (blob, moved)
    locks = run_in(B, "cat /sys/power/wake_lock")[1]
    assert "keepme" in locks, locks
    # This cellsd's ids, address and mounts; isolated as a fresh VP.
    map_b = init_uid_map(B)
    assert map_b[1] != map_a[1] and int(map_b[1]) >= 3000000, (map_a, map_b)
    addr = run_in(B, "ip -4 addr show eth0")[1]
    assert "10.48." in addr, addr
    mounts_b = mount_table(B)
    assert mounts_b == mounts_a, (sorted(set(mounts_a) - set(mounts_b)), sorted(set(mounts_b) - set(mounts_a)))
    locked = mounts_locked(vm, vp, B)
    assert locked[:-1] == ["own-ok"], f"the moved VP's masks are locked as a fresh VP's: {locked}"
    procs = run_in(B, "ls /proc 2>/dev/null | grep -c \"^[0-9]\"")[1].strip()
    assert int(procs) < 20, procs
    st = run_in(B, "stat -c %u:%g /data/blob")[1].strip()
    assert st == "0:0", st

    # And back with `cellctl move --live` (the copy here goes first).
    vm.ok(f"cellctl destroy {vp}", timeout=120)
    vm.ok(f"printf '{LOCAL_SSH}' > /tmp/localssh; chmod 755 /tmp/localssh")
    out = vm.ok(f"CELLS_SSH_COMMAND=/tmp/localssh {B} move {vp} --to ssh://root@localhost --live "
                f"--remote-socket /run/cells/cellsd.sock 2>&1", timeout=900)
    assert "gone from here" in out, out
    assert vp not in vm.ok(f"{B} list")
    assert counter_pids("cellctl") == pids
    c2 = count("cellctl")
    wait(lambda: count("cellctl") > c2 + 3, 30, "the counter to go on after moving back")
    assert init_uid_map("cellctl")[1] == map_a[1] or int(init_uid_map("cellctl")[1]) < 3000000
    assert "keepme" in run_in("cellctl", "cat /sys/power/wake_lock")[1]


# The move between two devices: this guest checkpoints a VP into the host's
# share; a second guest (another boot, its own kernel, state disk and
# cellsd) restores it (harness.py boots it after this one is stopped).
GUEST_MOVE = "/mnt/host/voyager.cellsvp"


def prepare_guest_move(vm):
    vp = "voyager"
    vm.run(f"rm -f {GUEST_MOVE} {GUEST_MOVE}.json")
    vm.ok(f"cellctl create {vp} --template minimal --disk 256M --color 654321", timeout=120)
    vm.ok(f"cellctl start {vp}", timeout=180)
    try:
        vm.ok(f"cellctl exec {vp} -- sh -c \"echo far > /data/mark; "
              f"setsid sh -c \\\"i=0; while true; do i=\\\\\\$((i+1)); echo \\\\\\$i > /data/count; sleep 0.1; done\\\" "
              f"</dev/null >/dev/null 2>&1 &\"")
        assert in_vp(vm, vp, "echo roaming > /sys/power/wake_lock")[0] == 0
        wait(lambda: int(in_vp(vm, vp, "cat /data/count")[1].strip() or 0) > 3, 20, "the counter to run")
        pids = loop_pids(vm, vp)
        assert len(pids) == 1, pids
        vm.ok(f"cellctl checkpoint {vp} -o {GUEST_MOVE}", timeout=300)
        vm.ok(f"echo '{json.dumps({'pids': pids})}' > {GUEST_MOVE}.json")
    finally:
        vm.run(f"cellctl stop {vp} --timeout 5; cellctl destroy {vp}", timeout=120)


def check_restore_from_other_guest(vm):
    vp = "voyager"
    was = json.loads(vm.ok(f"cat {GUEST_MOVE}.json"))
    # Its template is built here from the same recipe (same content).
    out = vm.ok(f"cellctl restore {GUEST_MOVE}", timeout=900)
    assert "restored" in out, out
    pids = loop_pids(vm, vp)
    assert pids == was["pids"], (was, pids)
    c = int(in_vp(vm, vp, "cat /data/count")[1].strip())
    assert c > 3, c
    wait(lambda: int(in_vp(vm, vp, "cat /data/count")[1].strip()) > c + 3, 30, "the counter to go on on this device")
    assert in_vp(vm, vp, "cat /data/mark")[1].strip() == "far"
    assert "roaming" in in_vp(vm, vp, "cat /sys/power/wake_lock")[1]
    ip = json.loads(vm.ok(f"cellctl status {vp} --json"))["ip"]
    assert ip and ip in in_vp(vm, vp, "ip -4 addr show eth0")[1], ip


def check_network(vm):
    # The initramfs has no nft: cellsd relies on the bridge port's kernel
    # `isolated` flag alone here (and says so in its log).
    log = vm.run("cat /tmp/cellsd.log")[1]
    assert "nft is not installed" in log, log
    ips = {}
    for vp in COLORS:
        st = json.loads(vm.ok(f"cellctl status {vp} --json"))
        assert st["network"] == "isolated" and st["ip"], st
        ips[vp] = st["ip"]
        rc, out = in_vp(vm, vp, "ip -4 addr show eth0")
        assert rc == 0 and st["ip"] in out, out
    links = vm.ok("ls /sys/class/net")
    assert "cells0" in links, links
    ports = vm.ok("ls /sys/class/net/cells0/brif")
    assert len(ports.split()) == len(COLORS), ports
    for p in ports.split():
        assert vm.ok(f"cat /sys/class/net/cells0/brif/{p}/isolated").strip() == "1", p
    a, b = list(COLORS)[:2]
    rc, out = in_vp(vm, a, "ping -c 1 -W 2 10.47.0.1")
    assert rc == 0, f"{a} cannot reach the host: {out}"
    rc, out = in_vp(vm, a, f"ping -c 1 -W 2 {ips[b]}")
    assert rc != 0, f"isolated {a} reached {b}: {out}"
    # adbd runs in every VP and answers on the VP's own loopback.
    def adbd_listens():
        rc, out = in_vp(vm, b, "getprop ro.product.model; cat /proc/net/tcp /proc/net/tcp6 | grep -c :15B3")
        return rc == 0 and out.split()[0] == b and int(out.split()[-1]) >= 1
    wait(adbd_listens, 20, f"adbd listening in {b}")


def check_freezer_v2(vm):
    fg = vm.ok("cellctl foreground").strip()
    bg = next(v for v in COLORS if v != fg)
    vm.ok(f"cellctl freeze {bg}")
    events = vm.ok(f"cat /sys/fs/cgroup/cells/{bg}/cgroup.events")
    assert "frozen 1" in events, events
    st = json.loads(vm.ok(f"cellctl status {bg} --json"))
    assert st["frozen"] is True and st["state"] == "frozen", st
    vm.ok(f"cellctl switch {bg}")
    events = vm.ok(f"cat /sys/fs/cgroup/cells/{bg}/cgroup.events /sys/fs/cgroup/cells/{bg}/cgroup.freeze")
    assert "frozen 0" in events and events.split()[-1] == "0", events
    wait(lambda: panel_color(vm) == COLORS[bg], 10, f"the panel to show {bg}")
    assert json.loads(vm.ok(f"cellctl status {bg} --json"))["frozen"] is False
    vm.ok(f"cellctl switch {fg}")


SYSROOT = "LD_LIBRARY_PATH=/mnt/host/sysroot/lib /mnt/host/sysroot/bin"


def inhibitors(vm):
    return vm.ok(f"{SYSROOT}/busctl --system call org.freedesktop.login1 /org/freedesktop/login1 "
                 "org.freedesktop.login1.Manager ListInhibitors")


def restart_cellsd(vm, extra=""):
    vm.run("kill $(cat /run/cells/cellsd.pid); while [ -e /run/cells/cellsd.sock ]; do sleep 0.1; done")
    start_cellsd(vm, extra)


def check_logind(vm):
    # A system bus and elogind (systemd-logind without systemd), as a
    # desktop or server has them.
    # Where clients look for the system bus (/var/run/dbus/...), as on Debian.
    vm.ok("[ -e /var/run ] || ln -s /run /var/run")
    vm.ok(f"mkdir -p /run/dbus; {SYSROOT}/dbus-daemon --config-file=/mnt/host/sysroot/system.conf "
          "--fork --print-pid > /tmp/dbus.pid")
    vm.ok(f"({SYSROOT}/elogind >/tmp/elogind.log 2>&1 & echo $! > /tmp/elogind.pid)")
    try:
        wait(lambda: "a(ssssuu)" in vm.run(f"{SYSROOT}/busctl --system call org.freedesktop.login1 "
                                         "/org/freedesktop/login1 org.freedesktop.login1.Manager "
                                         "ListInhibitors")[1], 20, "elogind on the system bus")
        restart_cellsd(vm, "--power-backend logind")
        assert power(vm)["backend"] == "logind", power(vm)
        assert "cells" not in inhibitors(vm)
        fg = vm.ok("cellctl foreground").strip()
        in_vp(vm, fg, "echo call > /sys/power/wake_lock")
        wait(lambda: re.search(r'"sleep" "cells" "wakelocks held by virtual phones: [a-z]+" "block"',
                               inhibitors(vm)), 10, "the sleep inhibitor")
        # A cellsd restart keeps the VP's lock: the new cellsd takes the
        # inhibitor again (the old one went with the old cellsd's fd).
        restart_cellsd(vm, "--power-backend logind")
        wait(lambda: '"cells"' in inhibitors(vm), 10, "the inhibitor after a cellsd restart")
        assert inhibitors(vm).count('"cells"') == 1, inhibitors(vm)
        rc, out = in_vp(vm, fg, "echo call > /sys/power/wake_unlock")
        assert rc == 0, f"wake_unlock in {fg}: {out}"
        try:
            wait(lambda: '"cells"' not in inhibitors(vm), 20, "the inhibitor to go")
        except AssertionError as e:
            raise AssertionError(f"{e}\npower: {power(vm)}\ninhibitors: {inhibitors(vm)}\n"
                                 f"cellsd log:\n{vm.run('tail -20 /tmp/cellsd.log')[1]}")
    finally:
        vm.run("kill $(cat /tmp/elogind.pid) $(cat /tmp/dbus.pid)")
        restart_cellsd(vm, "--power-backend none")


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


def push_probe(vm, vp):
    vm.ok(f"cellctl exec {vp} -- sh -c 'cat > /data/probe && chmod 755 /data/probe' < /mnt/host/bin/cells-probe")


def check_evdev(vm):
    out = vm.ok("cellctl exec red -- ls -l /dev/input/")
    assert re.search(r"^-rw-rw----.* event0\s*$", out, re.M) and "event1" in out, out
    devices = vm.ok("cat /proc/bus/input/devices")
    assert "cells" not in devices, f"a VP device is a host input device:\n{devices}"
    push_probe(vm, "red")
    info = vm.ok("cellctl exec red -- /data/probe evdev-info /dev/input/event1")
    assert "name cells keys" in info and "key 116" in info, info
    out = vm.ok("cellctl display")
    assert "QEMU Virtio Tablet" in out or "Tablet" in out, out


def dmesg_sysrq(vm):
    return vm.run("dmesg | grep -i sysrq")[1]


def check_keys_reach_no_host(vm):
    vm.ok("echo 1 > /proc/sys/kernel/sysrq; dmesg -c > /dev/null")
    push_probe(vm, "red")
    # Alt (56) + SysRq (99) + H (35), then KEY_POWER (116), from VP root.
    out = vm.ok("cellctl exec red -- /data/probe evdev-write /dev/input/event1 "
                "1:56:1 0:0:0 1:99:1 0:0:0 1:35:1 0:0:0 1:35:0 1:99:0 1:56:0 0:0:0 1:116:1 0:0:0 1:116:0 0:0:0")
    assert "wrote 336" in out, out
    time.sleep(2)
    assert "sysrq" not in dmesg_sysrq(vm).lower(), dmesg_sysrq(vm)
    assert vm.ok("echo alive").strip() == "alive"


def check_uinput_reaches_sysrq(vm):
    # What VP devices used to be: the same keys from a uinput device.
    vm.ok("echo 1 > /proc/sys/kernel/sysrq; dmesg -c > /dev/null")
    out = vm.ok("/mnt/host/bin/cells-probe uinput-keys 56 99 35")
    assert "pressed" in out, out
    try:
        wait(lambda: "sysrq" in dmesg_sysrq(vm).lower(), 10, "the host's sysrq handler to log the uinput keys")
    finally:
        vm.ok("dmesg -c > /dev/null")


def check_binder_every_start(vm):
    # red stops; yellow (new ids) must not get red's device, whose context
    # manager uid binder_linux remembers; red gets it back.
    vm.ok("cellctl stop red --timeout 5")
    vm.ok("cellctl create yellow --template minimal --color ffff00")
    vm.ok("cellctl start yellow", timeout=180)
    for vp in ["yellow", "green", "blue"]:
        out = vm.ok(f"cellctl exec {vp} -- /system/bin/binder-check")
        assert "context manager: ok" in out, f"{vp}: {out}"
    vm.ok("cellctl start red", timeout=180)
    out = vm.ok("cellctl exec red -- /system/bin/binder-check")
    assert "context manager: ok" in out, f"red after a restart: {out}"
    vm.ok("cellctl stop yellow --timeout 5; cellctl destroy yellow")
    vm.ok("cellctl switch red")


def check_fb_attack(vm, kernel):
    vm.ok("cellctl switch red")
    push_probe(vm, "red")
    size = PANEL_W * PANEL_H * 4
    for attack in [": > /dev/fb0", "truncate -s 1 /dev/graphics/fb0", "truncate -s 64M /dev/fb0"]:
        vm.run(f"cellctl exec red -- sh -c '{attack}'")
        time.sleep(0.5)
        assert vm.run("cellctl list")[0] == 0, f"cellsd died after {attack}: {vm.run('tail /tmp/cellsd.log')[1]}"
    out = vm.ok(f"cellctl exec red -- /data/probe mmap /dev/fb0 {size * 4}")
    if kernel:
        assert "errno 22" in out, f"mux_fb mapped past the frame: {out}"
        assert "errno" not in vm.ok(f"cellctl exec red -- /data/probe mmap /dev/fb0 {size}"), "control"
    time.sleep(0.5)
    assert vm.run("cellctl list")[0] == 0
    vm.ok("cellctl switch green")
    wait(lambda: panel_color(vm) == GREEN, 10, "the panel to show green after the attacks")
    vm.ok("cellctl switch red")


def check_tap(vm, x=300, y=500):
    vm.ok("cellctl switch blue")
    for vp in COLORS:
        vm.run(f"cellctl exec {vp} -- sh -c ': > /data/input.log'")
    vm.tap(x, y)
    wait(lambda: "BTN_TOUCH 0" in input_log(vm, "blue"), 20, "the tap in blue's log")
    log = input_log(vm, "blue")
    xs, ys = positions(log, "X"), positions(log, "Y")
    # (evdev drops unchanged values: each tap here is somewhere new)
    assert xs and ys, log
    assert abs(xs[0] - x) <= 2 and abs(ys[0] - y) <= 2, (xs, ys)
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


def check_lights_fixture(vm):
    vm.ok("insmod /mnt/host/cells_test_lights.ko")
    vm.ok("ls /sys/class/leds/cells-test:red/brightness /sys/class/backlight/cells-test-bl/brightness")


def host_light(vm, path):
    return vm.ok(f"cat {path}").strip()


def check_lights(vm):
    led = "/sys/class/leds/cells-test:red/brightness"
    bl = "/sys/class/backlight/cells-test-bl/brightness"
    vm.ok("cellctl switch red")
    vm.ok(f"cellctl exec red -- sh -c 'echo 123 > {led}; echo 40 > {bl}'")
    wait(lambda: host_light(vm, led) == "123" and host_light(vm, bl) == "40", 10,
         "the foreground's values on the real devices")
    vm.ok(f"cellctl exec green -- sh -c 'echo 7 > {led}; echo 90 > {bl}'")
    time.sleep(0.5)
    assert (host_light(vm, led), host_light(vm, bl)) == ("123", "40"), "a background VP changed the lights"
    assert vm.ok(f"cellctl exec green -- cat {led}").strip() == "7", "it reads back its own"
    vm.ok("cellctl switch green")
    wait(lambda: host_light(vm, led) == "7" and host_light(vm, bl) == "90", 10, "green's values replayed")
    vm.ok("cellctl switch red")
    wait(lambda: host_light(vm, led) == "123" and host_light(vm, bl) == "40", 10, "red's values replayed")


def check_evtest_accel(vm):
    vm.ok("cellctl template build fbtools", timeout=300)
    vm.ok("cellctl create sens --template fbtools")
    vm.ok("cellctl start sens", timeout=180)
    vm.ok("cellctl switch sens")
    vm.ok("cellctl exec sens -- sh -c '(/usr/bin/evtest /dev/input/event2 > /data/ev 2>&1 &); sleep 2'", timeout=60)
    vm.ok("cellctl sensor set accel 0 0 -9.80665")
    out = wait(lambda: (lambda t: t if "code 2 (ABS_Z), value -1000" in t else None)(
        vm.run("cellctl exec sens -- cat /data/ev")[1]), 20, "evtest to print the accelerometer's event")
    assert "INPUT_PROP_ACCELEROMETER" in out, out
    vm.ok("cellctl switch red")
    vm.run("cellctl stop sens --timeout 5")


def check_clock(vm):
    vm.ok("cellctl switch red")
    before = int(vm.ok("cellctl exec green -- date +%s").strip())
    rc, out = vm.run("cellctl exec blue -- alarm set-time +86400")
    assert rc != 0 and "only the foreground VP may set the clock" in out, out
    vm.ok("cellctl exec red -- alarm set-time +86400")
    try:
        after = int(vm.ok("cellctl exec green -- date +%s").strip())
        host = int(vm.ok("date +%s").strip())
        assert 86000 < after - before < 87000, (before, after)
        assert abs(host - after) < 60, (host, after)
    finally:
        vm.ok("cellctl exec red -- alarm set-time -86400")


def check_host_accel(vm):
    out = vm.ok("grep -c 'host accelerometers feed the VPs' /tmp/cellsd.log")
    assert out.strip() != "0", vm.run("cat /tmp/accel.log; tail -20 /tmp/cellsd.log")[1]
    # 1000 milli-g on Y: 1 g.
    got = wait(lambda: (lambda v: v if v.get("accel") and abs(v["accel"][1] - 9.80665) < 0.01 else None)(
        json.loads(vm.ok("cellctl sensor --json"))), 20, "the host accelerometer's reading")
    assert abs(got["accel"][2]) < 0.01, got


def screencap_raw(vm, vp):
    """Android's raw screencap (16-byte header, RGBA) of a VP, via the host share."""
    vm.ok(f"cellctl exec {vp} -- screencap > /mnt/host/cap.raw")
    data = (vm.share / "cap.raw").read_bytes()
    w, h, fmt = (int.from_bytes(data[i:i + 4], "little") for i in (0, 4, 8))
    return w, h, fmt, data[16:]


def check_toolbox(vm):
    # The toolbox's screencap on a real fbdev device (the VP's mux_fb node):
    # a background VP gets its own frame, the panel is untouched.
    vm.ok("cellctl switch red")
    w, h, fmt, px = screencap_raw(vm, "green")
    assert (w, h, fmt) == (PANEL_W, PANEL_H, 1), (w, h, fmt)
    assert len(px) == w * h * 4, len(px)
    off = (5 * w + 5) * 4
    assert tuple(px[off:off + 3]) == GREEN, tuple(px[off:off + 4])
    assert panel_color(vm) == RED, "the panel changed"
    # Control: the foreground's screencap is the panel's colour.
    _, _, _, fpx = screencap_raw(vm, "red")
    assert tuple(fpx[off:off + 3]) == RED, tuple(fpx[off:off + 4])
    png = vm.ok("cellctl exec green -- sh -c 'screencap -p | head -c 24 | od -An -tx1'")
    assert png.split()[:8] == ["89", "50", "4e", "47", "0d", "0a", "1a", "0a"], png
    # input from the background VP: its own log, never the foreground's.
    for vp in COLORS:
        vm.run(f"cellctl exec {vp} -- sh -c ': > /data/input.log'")
    vm.ok("cellctl exec green -- input tap 123 456")
    wait(lambda: "BTN_TOUCH 0" in input_log(vm, "green"), 20, "green's own tap in its log")
    log = input_log(vm, "green")
    assert 123 in positions(log, "X") and 456 in positions(log, "Y"), log
    for vp in ["red", "blue"]:
        assert "ABS_MT" not in input_log(vm, vp), f"{vp} got green's tap"
    # Control: the panel's tap still reaches the foreground.
    vm.tap(222, 333)
    wait(lambda: "BTN_TOUCH 0" in input_log(vm, "red"), 20, "the panel's tap in red's log")


def check_doctor(vm):
    """The positive side of what the host lacks (binder, uinput, pure v2)."""
    rc, out = vm.run("cellctl doctor --json --state-dir /var/lib/cells")
    d = json.loads(out.strip().splitlines()[-1])
    levels = {c["check"]: c["level"] for c in d["checks"]}
    for name in ["binder", "uinput", "memfd", "fuse", "overlay", "seccomp", "user namespaces", "cgroup v2", "freezer"]:
        assert levels.get(name) == "ok", (name, d)
    assert rc == (1 if d["missing"] else 0), (rc, d)


def tone_raw(freq, secs):
    """S16_LE 48 kHz stereo samples of a sine."""
    import math
    import struct
    n = int(48000 * secs)
    return b"".join(struct.pack("<hh", v, v) for v in
                    (int(12000 * math.sin(2 * math.pi * freq * i / 48000)) for i in range(n)))


def amplitude(samples, freq):
    import math
    k = 2 * math.cos(2 * math.pi * freq / 48000)
    a = b = 0.0
    for x in samples:
        a, b = x + k * a - b, a
    return 2 * math.sqrt(max(a * a + b * b - k * a * b, 0)) / max(len(samples), 1)


def speaker_since(vm, offset):
    """The left channel the sound card played from byte `offset` of speaker.wav on."""
    import struct
    data = (vm.work / "speaker.wav").read_bytes()[offset:]
    data = data[:len(data) // 4 * 4]
    return list(struct.unpack("<%dh" % (len(data) // 2), data))[0::2]


def check_speaker(vm):
    out = vm.ok("cellctl audio")
    if "output: ALSA /dev/snd/pcmC0D0p" not in out:
        diag = vm.run("ls -l /dev/snd; cat /proc/asound/cards; lsmod | grep snd; dmesg | grep -i -E 'hda|snd|sound' | tail; "
                      "grep -i audio /tmp/cellsd.log | tail -5")[1]
        raise AssertionError(f"{out}\n{diag}")
    (vm.share / "t440.raw").write_bytes(tone_raw(440, 12))
    (vm.share / "t880.raw").write_bytes(tone_raw(880, 12))
    vm.ok("cellctl switch red")
    # The VPs write their audio device as an app's ALSA library does.
    for vp, f in [("red", "t440.raw"), ("green", "t880.raw")]:
        vm.ok(f"cellctl exec {vp} -- sh -c 'cat > /data/tone.raw' < /mnt/host/{f}", timeout=180)
        # (busybox here has no nohup: the writer ignores SIGHUP itself)
        vm.ok(f"cellctl exec {vp} -- sh -c \"trap '' HUP; cat /data/tone.raw > /dev/snd/cells-playback 2>/data/cat.err &\"")
    time.sleep(1.0)
    wav = vm.work / "speaker.wav"
    start = wav.stat().st_size
    time.sleep(2.5)
    s = speaker_since(vm, start)
    if len(s) < 48000:
        raise AssertionError(f"the sound card played {len(s)} frames in 2.5 s\n" + vm.run(
            "cellctl audio; grep -i audio /tmp/cellsd.log | tail -5; cat /proc/asound/card0/pcm0p/sub0/status")[1])
    a, b = amplitude(s, 440), amplitude(s, 880)
    if not (a > 3000 and b < a / 20):
        raise AssertionError(f"red in front: 440 Hz at {a:.0f}, 880 Hz at {b:.0f}\n" + vm.run("cellctl audio")[1])
    vm.ok("cellctl switch green")
    time.sleep(0.5)
    start = wav.stat().st_size
    time.sleep(2.5)
    s = speaker_since(vm, start)
    a, b = amplitude(s, 440), amplitude(s, 880)
    assert b > 3000 and a < b / 20, f"green in front: 440 Hz at {a:.0f}, 880 Hz at {b:.0f}"
    vm.ok("cellctl switch red")


def modem_log(vm, vp):
    return vm.run(f"cellctl exec {vp} -- cat /data/modem.log")[1]


def check_modem(vm):
    restart_cellsd(vm, "--modem /dev/ttyS1")
    for vp in COLORS:
        # (the VPs run on: the new cellsd adopts them) The VP's RIL: a reader of its modem (a subshell, not the exec's
        # session leader, so the tty is nobody's controlling terminal).
        vm.ok(f"cellctl exec {vp} -- sh -c \"(exec 3<>/dev/ttyMODEM0; printf 'ATE0\\rAT+CLIP=1\\rAT+CMGF=1\\r' >&3; "
              f"exec cat <&3 > /data/modem.log) > /dev/null 2>&1 &\"")
    vm.ok("cellctl phone assign green")
    wait(lambda: '"registered": true' in vm.run("cellctl phone --json")[1], 30, "the modem to register")
    out = vm.ok("cellctl phone")
    assert "SimNet" in out and "+15559990000" in out and "-> green" in out, out
    vm.ok("cellctl switch red")
    vm.modem.stdin.write("ring +15551234567\n")
    vm.modem.stdin.flush()
    wait(lambda: '+CLIP: "+15551234567"' in modem_log(vm, "green"), 20, "the call to ring in green")
    vm.ok("cellctl answer green")
    wait(lambda: "answered" in vm.modem_said, 10, "the modem to be told to answer")
    vm.modem.stdin.write("hangup\nsms +15551234567 hello green\n")
    vm.modem.stdin.flush()
    wait(lambda: "hello green" in modem_log(vm, "green"), 20, "the message in green")
    for vp in ["red", "blue"]:
        log = modem_log(vm, vp)
        assert "RING" not in log and "+CMT" not in log, f"{vp} got green's line: {log}"
    vm.ok("cellctl sms green +15551234567 from-green")
    wait(lambda: "sms-out +15551234567 from-green" in vm.modem_said, 10, "the message to go out")
    restart_cellsd(vm)
