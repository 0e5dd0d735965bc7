#!/usr/bin/env python3
"""A second adb client for the tests: PyPI's adb-shell, which talks to adbd
directly (no adb server) and speaks adb's AUTH itself.

usage: adb_shell_client.py HOST PORT KEY COMMAND
  KEY: a private key file (PEM, as adb's ~/.android/adbkey; KEY.pub beside
       it), made with adb-shell's own keygen if it does not exist yet;
       "none" to offer no key at all.
Prints the command's output. Exit status 0 if the shell ran, 3 if adbd did
not let us in, 1 on any other failure.
"""
import os
import sys

from adb_shell.adb_device import AdbDeviceTcp
from adb_shell.auth.keygen import keygen
from adb_shell.auth.sign_pythonrsa import PythonRSASigner
from adb_shell import exceptions


def main():
    host, port, key, command = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    keys = []
    if key != "none":
        if not os.path.exists(key):
            keygen(key)
        with open(key) as f:
            priv = f.read()
        with open(key + ".pub") as f:
            pub = f.read()
        keys = [PythonRSASigner(pub, priv)]
    dev = AdbDeviceTcp(host, port, default_transport_timeout_s=10.0)
    try:
        dev.connect(rsa_keys=keys or None, auth_timeout_s=2.0)
    except (exceptions.DeviceAuthError, exceptions.AdbTimeoutError, exceptions.InvalidResponseError) as e:
        print(f"refused: {type(e).__name__}: {e}", file=sys.stderr)
        return 3
    except Exception as e:  # a closed socket counts as refused too
        print(f"refused: {type(e).__name__}: {e}", file=sys.stderr)
        return 3
    out = dev.shell(command)
    sys.stdout.write(out)
    dev.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
