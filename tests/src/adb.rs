//! Debian's stock `adb` client for tests and benchmarks: its own server
//! port and its own HOME (so its own key, `HOME/.android/adbkey`), ended
//! with `adb kill-server`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::{Cells, Out};

pub struct Adb {
    pub port: u16,
    /// The client's HOME: its key pair is in `.android/`.
    pub home: PathBuf,
}

impl Adb {
    /// A client whose HOME is a new folder under `c`'s temp dir.
    pub fn new(c: &Cells) -> Adb {
        // A port the kernel says is free now.
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        let port = l.local_addr().expect("addr").port();
        drop(l);
        let home = c.root.join(format!("adb-home-{port}"));
        std::fs::create_dir_all(&home).expect("adb home");
        let a = Adb { port, home };
        // The server makes the key pair at its first start.
        a.ok(&["start-server"]);
        a
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new("adb");
        c.env("ANDROID_ADB_SERVER_PORT", self.port.to_string())
            .env("HOME", &self.home)
            .stdin(std::process::Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Out {
        self.cmd()
            .args(args)
            .output()
            .expect("run adb (Debian package adb; scripts/install-deps installs it)")
            .into()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert_eq!(o.code, 0, "adb {args:?}: {o:?}");
        o.stdout
    }

    /// This client's public key file.
    pub fn key(&self) -> PathBuf {
        self.home.join(".android/adbkey.pub")
    }

    /// Let this client into `vp` (`cellctl adb VP --authorize KEYFILE`).
    pub fn authorize(&self, c: &Cells, vp: &str) {
        c.ok(&["adb", vp, "--authorize", &self.key().to_string_lossy()]);
    }

    /// Connect and wait until a shell works (adbd comes up with the VP's
    /// services: retry briefly). The key must be authorized.
    pub fn connect(&self, serial: &str) {
        let ok = Cells::wait_until(Duration::from_secs(10), || {
            let o = self.run(&["connect", serial]);
            o.stdout.contains("connected to")
                && self.run(&["-s", serial, "shell", "true"]).code == 0
        });
        assert!(
            ok,
            "adb connect {serial} failed: {:?} {:?}",
            self.run(&["connect", serial]),
            self.run(&["-s", serial, "shell", "true"])
        );
    }
}

impl Drop for Adb {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}
