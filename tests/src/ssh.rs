//! An SSH server for the `cellctl move` test: Debian's dropbear (unpacked
//! into target/dropbear by scripts/install-deps), on a free loopback port,
//! in a mount namespace of its own whose /root is a temp folder holding
//! the test's authorized key (the host's root home is not touched). Ended
//! by pid.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct SshServer {
    child: Child,
    pub port: u16,
    /// The client key the server lets in.
    pub key: PathBuf,
}

pub fn dropbear_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dropbear")
}

pub fn available() -> bool {
    dropbear_dir().join("usr/sbin/dropbear").exists() && Path::new("/usr/bin/ssh").exists()
}

impl SshServer {
    pub fn start(dir: &Path) -> SshServer {
        let db = dropbear_dir();
        let lib = db.join("usr/lib/x86_64-linux-gnu");
        let home = dir.join("home");
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        let key = dir.join("client");
        let _ = std::fs::remove_file(&key);
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::copy(key.with_extension("pub"), home.join(".ssh/authorized_keys")).unwrap();
        let host = dir.join("host_key");
        let _ = std::fs::remove_file(&host);
        let st = Command::new(db.join("usr/bin/dropbearkey"))
            .env("LD_LIBRARY_PATH", &lib)
            .args(["-t", "ed25519", "-f"])
            .arg(&host)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        let port = crate::sip::free_port();
        let script = format!(
            "mount --bind '{}' /root && exec env LD_LIBRARY_PATH='{}' '{}' -F -E -s -p 127.0.0.1:{port} -r '{}' -P '{}'",
            home.display(),
            lib.display(),
            db.join("usr/sbin/dropbear").display(),
            host.display(),
            dir.join("dropbear.pid").display()
        );
        let child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("dropbear.log")).unwrap())
            .spawn()
            .expect("unshare");
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "dropbear did not listen: {}",
                std::fs::read_to_string(dir.join("dropbear.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        SshServer { child, port, key }
    }

    /// What `cellctl move` should run as ssh (CELLS_SSH_COMMAND).
    pub fn ssh_command(&self) -> String {
        format!(
            "ssh -i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
            self.key.display()
        )
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        // SAFETY: a signal to our own child, by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}
