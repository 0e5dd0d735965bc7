"""tests/emulator/run: prove every device path on a real kernel.

Fetches (once) Debian's QEMU and 6.1 kernel, builds the project statically
and the mux_fb kernel module, boots the guest, runs cellsd there on the real
panel (bochs-drm fbdev), the real input devices (virtio tablet and keyboard,
grabbed), uinput VP devices, binder devices and cgroup v2, and checks what
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
BINARIES = ["cellsd", "cellctl", "cells-init", "cells-persona", "cells-binder-check"]


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
    return share


def build_module(cache: Path, abi: str):
    """Build mux-fb/kernel against the unpacked Debian headers. The headers'
    makefiles name absolute paths (/usr/src/linux-headers-*-common,
    /usr/lib/linux-kbuild-6.1), so the build runs in a private mount
    namespace where the unpacked folders are bound there."""
    src = REPO / "mux-fb/kernel"
    if not (src / "mux_fb.c").exists():
        return None
    root = cache / "root"
    work = cache / "kbuild"
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
        raise RuntimeError("building the mux_fb module failed:\n" + r.stdout)
    return work / "mux_fb.ko"


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
    share = build(cache, abi)
    init = HERE / "guest/init"
    kernel = g.build_initramfs(cache, abi, init, cache / "initrd.gz")
    work = cache / "work"
    work.mkdir(exist_ok=True)
    vm = Guest(cache, kernel, cache / "initrd.gz", share, work, log)
    res = Results()
    try:
        vm.start()
        log(f"guest booted in {vm.boot_secs:.1f}s")
        import checks
        checks.run_all(vm, res, bench=args.bench)
    except Exception as e:  # noqa: BLE001
        res.failed += 1
        log(f"FAIL harness: {e}")
        traceback.print_exc()
    finally:
        vm.stop()
        log(f"console log: {work / 'console.log'}; total {time.time() - t0:.0f}s")
    print(f"{res.passed} passed, {res.failed} failed", flush=True)
    sys.exit(0 if res.failed == 0 else 1)


if __name__ == "__main__":
    main()
