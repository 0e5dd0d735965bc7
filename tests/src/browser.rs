//! A real browser for the web console's test and benchmark: Debian's
//! chromium, headless, driven by npm's puppeteer-core through
//! tests/web/console.cjs (JSON commands on its stdin, an answer per line).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

pub struct Browser {
    child: Child,
    stdin: ChildStdin,
    out: BufReader<ChildStdout>,
}

pub fn node_modules() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/node/node_modules")
}

impl Browser {
    pub fn available() -> bool {
        std::path::Path::new("/usr/bin/chromium").exists()
            && node_modules().join("puppeteer-core").exists()
    }

    pub fn start() -> Browser {
        let mut child = Command::new("node")
            .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web/console.cjs"))
            .env("NODE_PATH", node_modules())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("node");
        let stdin = child.stdin.take().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        Browser { child, stdin, out }
    }

    /// Send a command without waiting for its answer ([`Browser::recv`]).
    pub fn send(&mut self, c: serde_json::Value) {
        writeln!(self.stdin, "{c}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The next answer.
    pub fn recv(&mut self) -> serde_json::Value {
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("browser said {line:?}"))
    }

    pub fn ask(&mut self, c: serde_json::Value) -> serde_json::Value {
        writeln!(self.stdin, "{c}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("browser said {line:?} to {c}"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", serde_json::json!({"op": "quit"}));
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
