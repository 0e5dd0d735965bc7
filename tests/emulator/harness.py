"""tests/emulator/run: prove every device path on a real kernel.

Fetches (once) Debian's QEMU and 6.1 kernel, builds the project statically
and the mux_fb kernel module, boots the guest, runs cellsd there on the real
panel (bochs-drm fbdev), the real input devices (virtio tablet and keyboard,
grabbed), uinput VP devices, binder devices, cgroup v2 (and its freezer),
each VP's /sys/power (FUSE) and the logind power backend (elogind on a
system bus in the guest), and checks what
the panel shows (QMP screendump) and where input goes (QMP input events).
The last line is "N passed, N failed"; the exit status is 0 only if all pass.
"""

import argparse
import json
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

import fetch  # noqa: E402
import guest as g  # noqa: E402
from guest import Guest, pixel  # noqa: E402

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
BINARIES = ["cellsd", "cellctl", "cells-init", "cells-persona", "cells-binder-check", "cells-adbd", "cells-prop",
            "cells-logtools", "cells-alarm", "cells-toolbox",
            "cells-probe"]


def log(msg):
    print(msg, flush=True)


def build(cache: Path, abi: str):
    log("building the project (release, static)")
    subprocess.run(["cargo", "build", "--release", "--workspace", "--quiet"], cwd=REPO, check=True)
    share = cache / "share"
    if share.exists():
        shutil.rmtree(share)
    (share / "bin").mkdir(parents=True)
    rel = REPO / "target/x86_64-unknown-linux-gnu/release"
    for b in BINARIES:
        shutil.copy2(rel / b, share / "bin" / b)
    shutil.copytree(REPO / "rootfs-templates", share / "rootfs-templates",
                    ignore=shutil.ignore_patterns("src", "Cargo.toml", "target"))
    # Test-only recipes (fbtools: minimal + Debian's fbcat).
    for r in (HERE / "recipes").iterdir():
        shutil.copytree(r, share / "rootfs-templates" / r.name)
    ko = build_module(cache, abi)
    if ko:
        shutil.copy2(ko, share / "mux_fb.ko")
    # A test fixture: an LED and a backlight class device (no hardware).
    shutil.copy2(build_module(cache, abi, HERE / "fixtures/lights", "cells_test_lights"),
                 share / "cells_test_lights.ko")
    build_logind_sysroot(cache, share / "sysroot")
    build_criu(cache, share / "criu")
    return share


# CRIU for the live checkpoint/restore checks: Debian 13's criu 4.1 (with its
# own C library and loader: the guest's is Debian 12's), and GNU tar, which
# criu runs to save tmpfs contents (the guest's busybox tar lacks options).
CRIU_PACKAGES = [
    "criu", "libc6", "libprotobuf-c1", "libnl-3-200", "libnet1", "libgnutls30t64",
    "libnftables1", "libnftnl11", "libmnl0", "libcap2", "libbsd0", "libuuid1", "libdrm2",
    "libp11-kit0", "libidn2-0", "libunistring5", "libtasn1-6", "libnettle8t64",
    "libhogweed6t64", "libgmp10", "libxtables12", "libjansson4", "libedit2", "libmd0",
    "libtinfo6", "libgcc-s1", "libffi8", "tar", "libacl1", "libselinux1", "libpcre2-8-0",
]


def build_criu(cache: Path, dest: Path):
    """share/criu: `run` (criu through trixie's loader) and bin/tar."""
    debs = cache / "criu-debs"
    if not (debs / ".complete").exists():
        log("fetching Debian 13's criu (private apt config; the host's sources are untouched)")
        apt = cache / "criu-apt"
        (apt / "lists/partial").mkdir(parents=True, exist_ok=True)
        (apt / "cache/archives/partial").mkdir(parents=True, exist_ok=True)
        (apt / "sources.list").write_text("deb http://deb.debian.org/debian trixie main\n")
        opts = ["-o", f"Dir::Etc::sourcelist={apt}/sources.list", "-o", "Dir::Etc::sourceparts=-",
                "-o", f"Dir::State::Lists={apt}/lists", "-o", f"Dir::Cache={apt}/cache",
                "-o", "APT::Get::List-Cleanup=0", "-q"]
        subprocess.run(["apt-get", *opts, "update"], check=True, stdout=subprocess.DEVNULL)
        if debs.exists():
            shutil.rmtree(debs)
        debs.mkdir(parents=True)
        debs.chmod(0o777)
        subprocess.run(["apt-get", *opts, "download", *CRIU_PACKAGES], cwd=debs, check=True,
                       stdout=subprocess.DEVNULL)
        (debs / ".complete").touch()
    root = cache / "criu-root"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir()
    for d in sorted(debs.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(d), str(root)], check=True)
    (dest / "lib").mkdir(parents=True)
    (dest / "bin").mkdir()
    for d in ["usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu"]:
        for so in (root / d).glob("*.so*") if (root / d).exists() else []:
            if so.is_file():
                shutil.copy2(so, dest / "lib" / so.name)
    shutil.copy2(root / "usr/lib64/ld-linux-x86-64.so.2", dest / "lib/ld-linux-x86-64.so.2")
    shutil.copy2(root / "usr/sbin/criu", dest / "criu")
    loader = "/mnt/host/criu/lib/ld-linux-x86-64.so.2 --library-path /mnt/host/criu/lib"
    (dest / "run").write_text(f"#!/bin/sh\nexec {loader} /mnt/host/criu/criu \"$@\"\n")
    shutil.copy2(root / "usr/bin/tar", dest / "bin/tar.real")
    (dest / "bin/tar").write_text(f"#!/bin/sh\nexec {loader} /mnt/host/criu/bin/tar.real \"$@\"\n")
    for f in [dest / "run", dest / "bin/tar"]:
        f.chmod(0o755)


# What the guest runs for the logind check (from the cache root), with the
# shared libraries they load.
LOGIND_PROGRAMS = ["lib/elogind/elogind", "usr/bin/busctl", "usr/bin/dbus-daemon"]


def build_logind_sysroot(cache: Path, dest: Path):
    """share/sysroot: elogind, busctl and dbus-daemon from the unpacked
    packages, with every library they need (resolved by the host's ld.so,
    the cache root's libraries first; the guest has the same C library)."""
    root = cache / "root"
    (dest / "bin").mkdir(parents=True)
    (dest / "lib").mkdir()
    env = {"LD_LIBRARY_PATH": f"{root}/lib/elogind:{root}/lib/x86_64-linux-gnu:{root}/usr/lib/x86_64-linux-gnu",
           "PATH": "/usr/bin:/bin"}
    for prog in LOGIND_PROGRAMS:
        src = root / prog
        shutil.copy2(src, dest / "bin" / src.name)
        out = subprocess.run(["ldd", str(src)], env=env, text=True, check=True,
                             stdout=subprocess.PIPE).stdout
        for line in out.splitlines():
            parts = line.split("=>")
            if len(parts) != 2:
                continue
            path = parts[1].split("(")[0].strip()
            if not path or path == "not found":
                raise RuntimeError(f"{prog}: a library is missing:\n{out}")
            name = parts[0].strip()
            if name.startswith("libc.so") or (dest / "lib" / name).exists():
                continue
            shutil.copy2(Path(path).resolve(), dest / "lib" / name)
    # A system bus that lets everything through: the guest is the test's own.
    (dest / "system.conf").write_text("""<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
""")


def build_module(cache: Path, abi: str, src: Path = REPO / "mux-fb/kernel", name: str = "mux_fb"):
    """Build a module (mux-fb/kernel, or a test fixture) against the
    unpacked Debian headers. The headers' makefiles name absolute paths
    (/usr/src/linux-headers-*-common, /usr/lib/linux-kbuild-6.1), so the
    build runs in a private mount namespace where the unpacked folders are
    bound there."""
    if not (src / f"{name}.c").exists():
        return None
    root = cache / "root"
    work = cache / f"kbuild-{name}"
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(src, work)
    script = f"""
set -e
mount --bind {root}/usr/src /usr/src 2>/dev/null || {{ mkdir -p /usr/src; mount --bind {root}/usr/src /usr/src; }}
mkdir -p /usr/lib/linux-kbuild-6.1
mount --bind {root}/usr/lib/linux-kbuild-6.1 /usr/lib/linux-kbuild-6.1
make -s -C /usr/src/linux-headers-{abi}-amd64 M={work} modules
"""
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                       text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise RuntimeError(f"building the {name} module failed:\n" + r.stdout)
    return work / f"{name}.ko"


class Results:
    def __init__(self):
        self.passed, self.failed = 0, 0

    def check(self, name, fn):
        t = time.time()
        try:
            fn()
            self.passed += 1
            log(f"PASS {name} ({time.time() - t:.1f}s)")
        except Exception as e:  # noqa: BLE001 - every failure is reported
            self.failed += 1
            log(f"FAIL {name}: {e}")
            traceback.print_exc(limit=3)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cache", default=str(HERE / ".cache"))
    ap.add_argument("--bench", action="store_true", help="run the benchmarks too")
    ap.add_argument("--keep", action="store_true", help="leave the guest's console log")
    args = ap.parse_args()
    cache = Path(args.cache).resolve()
    t0 = time.time()
    abi = fetch.fetch(cache, log)
    fetch.fetch_extra(cache, "logind", fetch.LOGIND_PACKAGES, log)
    share = build(cache, abi)
    init = HERE / "guest/init"
    kernel = g.build_initramfs(cache, abi, init, cache / "initrd.gz")
    work = cache / "work"
    work.mkdir(exist_ok=True)
    vm = Guest(cache, kernel, cache / "initrd.gz", share, work, log)
    res = Results()
    # The cellular modem: the test fixture on a pty, wired to the guest's ttyS1.
    sim = subprocess.Popen([str(REPO / "target/x86_64-unknown-linux-gnu/release/cells-modem-sim")],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    vm.modem = sim
    vm.modem_said = []
    modem_tty = sim.stdout.readline().strip()

    def collect():
        for line in sim.stdout:
            vm.modem_said.append(line.strip())
    import threading
    threading.Thread(target=collect, daemon=True).start()
    try:
        vm.start(modem_tty=modem_tty)
        log(f"guest booted in {vm.boot_secs:.1f}s")
        import checks
        checks.run_all(vm, res, bench=args.bench)
    except Exception as e:  # noqa: BLE001
        res.failed += 1
        log(f"FAIL harness: {e}")
        traceback.print_exc()
    finally:
        vm.stop()
        sim.kill()
        sim.wait()
        log(f"console log: {work / 'console.log'}; total {time.time() - t0:.0f}s")
    # A second device: another boot of the guest (its own state disk and
    # cellsd) restores the VP the first one checkpointed into the share.
    if (share / "voyager.cellsvp").exists():
        work2 = cache / "work2"
        work2.mkdir(exist_ok=True)
        vm2 = Guest(cache, kernel, cache / "initrd.gz", share, work2, log)
        try:
            vm2.start()
            log(f"second guest booted in {vm2.boot_secs:.1f}s")
            import checks
            checks.start_cellsd(vm2)
            res.check("live move between two devices: the second guest restores the first one's VP (processes, data, wakelock go on; its address)",
                      lambda: checks.check_restore_from_other_guest(vm2))
        except Exception as e:  # noqa: BLE001
            res.failed += 1
            log(f"FAIL second guest: {e}")
            traceback.print_exc()
        finally:
            vm2.stop()
            log(f"second guest's console log: {work2 / 'console.log'}; total {time.time() - t0:.0f}s")
    print(f"{res.passed} passed, {res.failed} failed", flush=True)
    sys.exit(0 if res.failed == 0 else 1)


if __name__ == "__main__":
    main()
