"""Download what the emulator needs from Debian's packages into a cache.

Nothing is installed on the host: the .debs are fetched with `apt-get
download` and unpacked with `dpkg-deb -x` (installing qemu-system-x86 with
apt would conflict with the host's newer qemu-utils). Later runs reuse the
cache.
"""

import os
import subprocess
import sys
from pathlib import Path


def sh(*args, cwd=None, check=True, capture=True):
    r = subprocess.run(args, cwd=cwd, check=False, text=True,
                       stdout=subprocess.PIPE if capture else None,
                       stderr=subprocess.STDOUT if capture else None)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} failed:\n{r.stdout}")
    return r.stdout or ""


def installed(pkg):
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return "install ok installed" in r.stdout


def kernel_abi():
    """The current Debian 6.1 kernel ABI, e.g. 6.1.0-48 (moves with security updates)."""
    for line in sh("apt-cache", "depends", "linux-image-amd64").splitlines():
        line = line.strip()
        if line.startswith("Depends: linux-image-"):
            name = line.split("linux-image-", 1)[1]
            return name.rsplit("-amd64", 1)[0]
    raise RuntimeError("cannot resolve linux-image-amd64 (run apt-get update?)")


def qemu_packages():
    out = sh("apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests",
             "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances",
             "qemu-system-x86")
    names = sorted({l for l in out.splitlines() if l and not l.startswith(" ") and not l.startswith("<")})
    return [n for n in names if not installed(n)]


def fetch(cache: Path, log=print):
    debs = cache / "debs"
    root = cache / "root"
    debs.mkdir(parents=True, exist_ok=True)
    stamp = cache / "fetched"
    # The stamp names the kernel and the packages: a changed list fetches again.
    if stamp.exists():
        lines = stamp.read_text().split("\n")
        abi = lines[0].strip()
        if len(lines) > 1 and lines[1].strip() == ",".join(packages(abi)):
            return abi
    abi = kernel_abi()
    pkgs = packages(abi)
    log(f"fetching {len(pkgs)} Debian packages (kernel {abi}) into {debs}")
    os.chmod(debs, 0o777)  # apt's sandbox user writes there
    r = subprocess.run(["apt-get", "download", *pkgs], cwd=debs, text=True,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        sh("apt-get", "update", "-q")
        sh("apt-get", "download", *pkgs, cwd=debs)
    for deb in sorted(debs.glob("*.deb")):
        sh("dpkg-deb", "-x", str(deb), str(root))
    stamp.write_text(abi + "\n" + ",".join(pkgs) + "\n")
    return abi


def packages(abi):
    """The packages the guest is made of."""
    return [f"linux-image-{abi}-amd64", f"linux-headers-{abi}-amd64",
            f"linux-headers-{abi}-common", "linux-kbuild-6.1",
            "busybox-static", "fbcat", "evtest"] + qemu_packages()


# systemd-logind's stand-alone version and a D-Bus system bus, to prove
# cellsd's logind power backend (the guest has no systemd); with the
# libraries they need beyond the C library.
LOGIND_PACKAGES = [
    "elogind", "libelogind0", "dbus-daemon", "libdbus-1-3", "libexpat1", "libapparmor1",
    "libaudit1", "libcap-ng0", "libselinux1", "libpcre2-8-0", "libacl1", "libcap2", "libpam0g",
]


def fetch_extra(cache: Path, name: str, pkgs, log=print):
    """Download and unpack more packages into the cache root (once per set)."""
    stamp = cache / f"fetched-{name}"
    if stamp.exists():
        return
    debs = cache / f"debs-{name}"
    debs.mkdir(parents=True, exist_ok=True)
    os.chmod(debs, 0o777)
    log(f"fetching {len(pkgs)} Debian packages ({name}) into {debs}")
    r = subprocess.run(["apt-get", "download", *pkgs], cwd=debs, text=True,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        sh("apt-get", "update", "-q")
        sh("apt-get", "download", *pkgs, cwd=debs)
    for deb in sorted(debs.glob("*.deb")):
        sh("dpkg-deb", "-x", str(deb), str(cache / "root"))
    stamp.write_text(" ".join(pkgs) + "\n")


if __name__ == "__main__":
    print(fetch(Path(sys.argv[1])))
