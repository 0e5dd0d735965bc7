"""The emulator device: a QEMU guest (software emulation) running Debian's
6.1 kernel from an initramfs, with a 720x1280 panel (VGA -> bochs-drm
fbdev), virtio tablet and keyboard, a 9p share with the project's binaries,
an ext4 state disk and a serial console. Driven through QMP and the console.
"""

import gzip
import json
import lzma
import os
import re
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path

PANEL_W, PANEL_H = 720, 1280

# Kernel modules the guest loads (dependencies are added).
MODULES = [
    "virtio_pci", "virtio_blk", "virtio_input", "evdev", "uinput", "bochs",
    "overlay", "crc32c_generic", "ext4", "9p", "9pnet_virtio", "fuse",
    "veth", "bridge", "snd_intel8x0",
    # CRIU (live checkpoint/restore): socket and conntrack diagnostics.
    "unix_diag", "inet_diag", "tcp_diag", "udp_diag", "netlink_diag", "af_packet_diag",
    "nf_conntrack_netlink",
    # VP disks (ext4 images on loop devices): the live move between two cellsd.
    "loop",
]


# ---------------------------------------------------------------- initramfs

def _modinfo_depends(data: bytes):
    m = re.search(rb"depends=([^\x00]*)\x00", data)
    if not m or not m.group(1):
        return []
    return [d.decode() for d in m.group(1).split(b",") if d]


def collect_modules(modroot: Path, wanted):
    """{name: (relpath, uncompressed bytes, deps)} for `wanted` and their deps."""
    index = {}
    for p in modroot.joinpath("kernel").rglob("*.ko*"):
        name = p.name.split(".ko")[0].replace("-", "_")
        index[name] = p
    out = {}
    todo = [w.replace("-", "_") for w in wanted]
    while todo:
        name = todo.pop()
        if name in out:
            continue
        p = index.get(name)
        if p is None:
            continue  # built in
        data = p.read_bytes()
        if p.suffix == ".xz":
            data = lzma.decompress(data)
        deps = [d.replace("-", "_") for d in _modinfo_depends(data)]
        rel = str(p.relative_to(modroot)).removesuffix(".xz")
        out[name] = (rel, data, deps)
        todo.extend(deps)
    return out


class Cpio:
    """A newc cpio archive (what the kernel unpacks as initramfs)."""

    def __init__(self):
        self.buf = bytearray()
        self.ino = 1

    def _entry(self, name, mode, data=b"", nlink=1):
        name_b = name.encode() + b"\x00"
        hdr = "070701" + "".join(f"{v:08x}" for v in [
            self.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name_b), 0])
        self.ino += 1
        self.buf += hdr.encode() + name_b
        self.buf += b"\x00" * ((4 - len(self.buf) % 4) % 4)
        self.buf += data
        self.buf += b"\x00" * ((4 - len(self.buf) % 4) % 4)

    def dir(self, name):
        self._entry(name, 0o040755, nlink=2)

    def file(self, name, data, mode=0o644):
        self._entry(name, 0o100000 | mode, data)

    def symlink(self, name, target):
        self._entry(name, 0o120777, target.encode())

    def finish(self):
        self._entry("TRAILER!!!", 0)
        return bytes(self.buf)


def build_initramfs(cache: Path, abi: str, init_script: Path, out: Path):
    root = cache / "root"
    kver = f"{abi}-amd64"
    modroot = root / "lib/modules" / kver
    mods = collect_modules(modroot, MODULES + ["binder_linux"])
    c = Cpio()
    dirs = set()

    def mkdirs(path):
        parts = path.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d and d not in dirs:
                dirs.add(d)
                c.dir(d)

    for d in ["bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "run", "mnt", "usr/bin", "usr/local/bin",
              "var/lib/cells", "lib64", "lib/x86_64-linux-gnu"]:
        mkdirs(d)
    c.file("init", init_script.read_bytes(), 0o755)
    c.file("bin/busybox", (root / "bin/busybox").read_bytes(), 0o755)
    # An unmodified Debian fbdev program (fbcat) with the C library it needs.
    c.file("usr/bin/fbcat", (root / "usr/bin/fbcat").read_bytes(), 0o755)
    # And Debian's evtest, for the accelerometer check.
    c.file("usr/bin/evtest", (root / "usr/bin/evtest").read_bytes(), 0o755)
    # Debian's mkfs.ext4 and e2fsck (this host's, as the C library is), for
    # VPs with a disk image of their own (export/import, the live move).
    mkdirs("usr/sbin")
    c.file("usr/sbin/mkfs.ext4", Path("/usr/sbin/mke2fs").read_bytes(), 0o755)
    c.file("usr/bin/e2fsck", Path("/usr/sbin/e2fsck").read_bytes(), 0o755)  # in PATH
    c.file("etc/mke2fs.conf", Path("/etc/mke2fs.conf").read_bytes())
    e2libs = ["libblkid.so.1", "libcom_err.so.2", "libe2p.so.2", "libext2fs.so.2", "libuuid.so.1"]
    for lib in ["/lib/x86_64-linux-gnu/libc.so.6"] + [f"/lib/x86_64-linux-gnu/{n}" for n in e2libs]:
        c.file(lib.lstrip("/"), Path(lib).resolve().read_bytes(), 0o755)
    c.file("lib64/ld-linux-x86-64.so.2", Path("/lib64/ld-linux-x86-64.so.2").resolve().read_bytes(), 0o755)
    def closure(name):
        """Transitive dependencies as depmod lists them: every module before
        the ones it needs (modprobe loads the list from the end)."""
        post = []

        def visit(n):
            for d in mods[n][2]:
                if d in mods and d not in post:
                    visit(d)
                    post.append(d)
        visit(name)
        return list(reversed(post))

    deps_lines = []
    for name, (rel, data, deps) in sorted(mods.items()):
        path = f"lib/modules/{kver}/{rel}"
        mkdirs(os.path.dirname(path))
        c.file(path, data)
        dep_paths = [mods[d][0] for d in closure(name)]
        deps_lines.append(f"{rel}: {' '.join(dep_paths)}".rstrip())
    c.file(f"lib/modules/{kver}/modules.dep", ("\n".join(deps_lines) + "\n").encode())
    c.file("etc/modules", ("\n".join(MODULES) + "\n").encode())
    c.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    c.file("etc/group", b"root:x:0:\ntty:x:5:\n")
    out.write_bytes(gzip.compress(c.finish(), compresslevel=3))
    return root / "boot" / f"vmlinuz-{kver}"


# ---------------------------------------------------------------- the guest

class Guest:
    def __init__(self, cache: Path, kernel: Path, initrd: Path, share: Path, work: Path, log=print):
        self.cache, self.kernel, self.initrd, self.share, self.work = cache, kernel, initrd, share, work
        self.log = log
        self.proc = None
        self.serial = None
        self.qmp_sock = None
        self.console = bytearray()

    def start(self, timeout=120, modem_tty=None):
        root = self.cache / "root"
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = f"{root}/usr/lib/x86_64-linux-gnu:{root}/lib/x86_64-linux-gnu"
        state = self.work / "state.img"
        if state.exists():
            state.unlink()
        subprocess.run(["mke2fs", "-q", "-t", "ext4", "-F", str(state), "512M"], check=True)
        qmp_path, ser_path = self.work / "qmp.sock", self.work / "serial.sock"
        for p in (qmp_path, ser_path):
            if p.exists():
                p.unlink()
        cmd = [
            str(root / "usr/bin/qemu-system-x86_64"),
            "-L", str(root / "usr/share/qemu"), "-L", str(root / "usr/share/seabios"),
            "-machine", "pc", "-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "1536",
            "-kernel", str(self.kernel), "-initrd", str(self.initrd),
            "-append", "console=ttyS0 quiet loglevel=1 panic=-1",
            "-device", f"VGA,xres={PANEL_W},yres={PANEL_H},edid=on",
            "-device", "virtio-tablet-pci", "-device", "virtio-keyboard-pci",
            "-fsdev", f"local,id=share,path={self.share},security_model=none",
            "-device", "virtio-9p-pci,fsdev=share,mount_tag=share",
            "-drive", f"file={state},if=virtio,format=raw",
            # A real sound card; what it plays is written to speaker.wav.
            "-audiodev", f"wav,id=snd0,path={self.work / 'speaker.wav'},out.frequency=48000,"
                         "out.channels=2,out.format=s16",
            "-device", "AC97,audiodev=snd0",
            "-chardev", f"socket,id=ser0,path={ser_path},server=on,wait=off",
            "-serial", "chardev:ser0",
        ]
        if modem_tty:
            # A second UART (the guest's ttyS1): the cellular modem, its other
            # end the modem simulator's pty on the host.
            cmd += ["-chardev", f"serial,id=modem,path={modem_tty}", "-serial", "chardev:modem"]
        cmd += [
            "-qmp", f"unix:{qmp_path},server=on,wait=off",
            "-display", "none", "-no-reboot", "-nic", "none",
        ]
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=open(self.work / "qemu.log", "wb"), stderr=subprocess.STDOUT)
        deadline = time.time() + 10
        while not (qmp_path.exists() and ser_path.exists()):
            if time.time() > deadline or self.proc.poll() is not None:
                raise RuntimeError("qemu did not start: " + (self.work / "qemu.log").read_text())
            time.sleep(0.05)
        self.serial = socket.socket(socket.AF_UNIX)
        self.serial.connect(str(ser_path))
        self.qmp_sock = socket.socket(socket.AF_UNIX)
        self.qmp_sock.connect(str(qmp_path))
        self.qmp_file = self.qmp_sock.makefile("rwb")
        json.loads(self.qmp_file.readline())
        self.qmp("qmp_capabilities")
        t0 = time.time()
        self.wait_for(rb"GUEST-READY[^\n]*\n", timeout)
        self.boot_secs = time.time() - t0
        self.run("stty -echo 2>/dev/null; export PS1=''; true")
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            try:
                self.qmp("quit")
            except Exception:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        (self.work / "console.log").write_bytes(bytes(self.console))

    # console ------------------------------------------------------------

    def _read(self, timeout):
        self.serial.settimeout(timeout)
        try:
            data = self.serial.recv(65536)
        except socket.timeout:
            return b""
        if not data:
            raise RuntimeError("serial console closed")
        self.console += data
        return data

    def wait_for(self, pattern: bytes, timeout):
        start = len(self.console)
        deadline = time.time() + timeout
        rx = re.compile(pattern)
        while True:
            m = rx.search(self.console, start)
            if m:
                return m
            left = deadline - time.time()
            if left <= 0:
                tail = bytes(self.console[-2000:]).decode(errors="replace")
                raise TimeoutError(f"console: no {pattern!r} within {timeout}s; last output:\n{tail}")
            self._read(min(left, 1.0))

    _seq = 0

    def run(self, command: str, timeout=120, check=False):
        """Run a shell command in the guest; returns (exit status, output)."""
        Guest._seq += 1
        tag = f"@@{Guest._seq}@@"
        start = len(self.console)
        self.serial.sendall(f"{command}\necho {tag}$?{tag}\n".encode())
        m = self.wait_for(re.escape(tag.encode()) + rb"(\d+)" + re.escape(tag.encode()), timeout)
        out = bytes(self.console[start:m.start()]).decode(errors="replace")
        rc = int(m.group(1))
        if check and rc != 0:
            raise AssertionError(f"guest: {command!r} exited {rc}:\n{out}")
        return rc, out

    def ok(self, command: str, timeout=120):
        return self.run(command, timeout, check=True)[1]

    # QMP ------------------------------------------------------------------

    def qmp(self, execute, **arguments):
        msg = {"execute": execute}
        if arguments:
            msg["arguments"] = arguments
        self.qmp_file.write(json.dumps(msg).encode() + b"\n")
        self.qmp_file.flush()
        while True:
            reply = json.loads(self.qmp_file.readline())
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise RuntimeError(f"QMP {execute}: {reply['error']}")
            # events: ignored

    def screendump(self):
        """What the panel shows: (width, height, RGB bytes)."""
        path = self.work / "screen.ppm"
        self.qmp("screendump", filename=str(path))
        data = path.read_bytes()
        m = re.match(rb"P6\s+(\d+)\s+(\d+)\s+(\d+)\s", data)
        w, h = int(m.group(1)), int(m.group(2))
        return w, h, data[m.end():]

    def tap(self, x, y, hold=0.05):
        """A tap on the virtio tablet at panel pixel (x, y)."""
        ax = x * 0x7FFF // (PANEL_W - 1)
        ay = y * 0x7FFF // (PANEL_H - 1)
        self.qmp("input-send-event", events=[
            {"type": "abs", "data": {"axis": "x", "value": ax}},
            {"type": "abs", "data": {"axis": "y", "value": ay}},
            {"type": "btn", "data": {"down": True, "button": "left"}}])
        time.sleep(hold)
        self.qmp("input-send-event", events=[{"type": "btn", "data": {"down": False, "button": "left"}}])

    def key(self, qcode, down):
        self.qmp("input-send-event", events=[
            {"type": "key", "data": {"down": down, "key": {"type": "qcode", "data": qcode}}}])


def pixel(img, x, y):
    w, h, rgb = img
    i = (y * w + x) * 3
    return rgb[i], rgb[i + 1], rgb[i + 2]
