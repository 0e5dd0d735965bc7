//! The SIP world outside the device, for the telephony tests and the
//! benchmark: Debian's `kamailio` as the SIP server (registrar and proxy on
//! loopback, `tests/sip/kamailio.cfg`, digest authentication on) and
//! Debian's `baresip` as an outside phone, driven through its `ctrl_tcp`
//! module (JSON in netstrings). Each is started by the test with its own
//! configuration in a temp dir and ended by pid. baresip's jitter buffer
//! is 1-3 frames (20-60 ms; its default 5-10 frames suits the internet,
//! not loopback).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The password every number uses with the test's server.
pub const SECRET: &str = "cells-test-secret";

/// Whether kamailio and baresip are installed (scripts/install-deps).
pub fn available() -> bool {
    Path::new("/usr/sbin/kamailio").exists() && Path::new("/usr/bin/baresip").exists()
}

/// A UDP port that is free on 127.0.0.1 (for TCP too).
pub fn free_port() -> u16 {
    loop {
        let u = UdpSocket::bind("127.0.0.1:0").expect("udp bind");
        let port = u.local_addr().expect("addr").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn stop(child: &mut Child) {
    // SAFETY: a signal to our own child, by pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub struct Kamailio {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Kamailio {
    pub fn start(dir: &Path) -> Kamailio {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let cfg =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("sip/kamailio.cfg"))
                .unwrap()
                .replace("@PORT@", &port.to_string())
                .replace("@SECRET@", SECRET);
        let file = dir.join("kamailio.cfg");
        std::fs::write(&file, cfg).unwrap();
        let log = dir.join("kamailio.log");
        let child = Command::new("/usr/sbin/kamailio")
            .arg("-f")
            .arg(&file)
            .args(["-DD", "-E", "-A", "WITH_AUTH", "-Y"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.join("kamailio.err")).unwrap())
            .spawn()
            .expect("kamailio (scripts/install-deps installs it)");
        // Listening: the port is taken.
        let t = Instant::now();
        while UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "kamailio did not listen: {}",
                std::fs::read_to_string(dir.join("kamailio.err")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Kamailio { child, port, log }
    }

    pub fn uri(&self) -> String {
        format!("sip:127.0.0.1:{}", self.port)
    }

    /// What the server logged (its script's lines go to stderr).
    pub fn said(&self) -> String {
        std::fs::read_to_string(self.log.with_file_name("kamailio.err")).unwrap_or_default()
    }

    /// End it (a dead server).
    pub fn stop(&mut self) {
        stop(&mut self.child);
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// An outside phone: baresip with one account, its own tone as its
/// microphone (8 kHz), what it receives dumped to WAV files (`snd_path`).
pub struct Baresip {
    child: Child,
    pub dir: PathBuf,
    pub number: String,
    ctrl: TcpStream,
    events: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Baresip {
    /// `number` at the server; `contact` is who its `message` command
    /// texts; `tone`: the frequency it sends in calls (it answers calls
    /// itself), or None: it sends back what it receives (baresip's echo
    /// module answers).
    pub fn start(
        dir: &Path,
        server: &Kamailio,
        number: &str,
        contact: &str,
        tone: Option<f64>,
    ) -> Baresip {
        std::fs::create_dir_all(dir.join("snd")).unwrap();
        let source = match tone {
            Some(f) => {
                std::fs::write(dir.join("tone.wav"), crate::sound::tone_wav(f, 120.0, 8000))
                    .unwrap();
                format!("aufile,{}", dir.join("tone.wav").display())
            }
            None => "aubridge,nil\nmodule_app echo.so".to_string(),
        };
        let answer = if tone.is_some() {
            ";answermode=auto"
        } else {
            ""
        };
        let (sip_port, ctrl_port) = (free_port(), free_port());
        let config = format!(
            "poll_method epoll\nsip_listen 127.0.0.1:{sip_port}\nsip_trans_def udp\n\
             audio_player aubridge,nil\naudio_alert aubridge,nil\naudio_source {source}\n\
             module_path /usr/lib/baresip/modules\nmodule g711.so\nmodule aufile.so\n\
             module aubridge.so\nmodule sndfile.so\nmodule_app account.so\nmodule_app contact.so\n\
             module_app menu.so\nmodule_app ctrl_tcp.so\nctrl_tcp_listen 127.0.0.1:{ctrl_port}\n\
             snd_path {snd}\nnet_interface 127.0.0.1\njitter_buffer_delay 1-3\n",
            snd = dir.join("snd").display(),
        );
        std::fs::write(dir.join("config"), config).unwrap();
        std::fs::write(
            dir.join("accounts"),
            format!(
                "<sip:{number}@127.0.0.1>;outbound=\"sip:127.0.0.1:{}\";auth_pass={SECRET}{answer};audio_codecs=PCMU,PCMA\n",
                server.port
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("contacts"),
            format!("\"peer\" <sip:{contact}@127.0.0.1>\n"),
        )
        .unwrap();
        let child = Command::new("/usr/bin/baresip")
            .arg("-f")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("baresip.log")).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("baresip (scripts/install-deps installs it)");
        let t = Instant::now();
        let ctrl = loop {
            if let Ok(s) = TcpStream::connect(("127.0.0.1", ctrl_port)) {
                break s;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "baresip did not start: {}",
                std::fs::read_to_string(dir.join("baresip.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let events = Arc::new(Mutex::new(Vec::new()));
        let (mut r, ev) = (ctrl.try_clone().unwrap(), Arc::clone(&events));
        std::thread::spawn(move || {
            // Netstrings: LEN ':' JSON ','.
            let mut buf = Vec::new();
            let mut b = [0u8; 4096];
            while let Ok(n) = r.read(&mut b) {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&b[..n]);
                while let Some(colon) = buf.iter().position(|c| *c == b':') {
                    let Some(len) = std::str::from_utf8(&buf[..colon])
                        .ok()
                        .and_then(|l| l.parse::<usize>().ok())
                    else {
                        buf.clear();
                        break;
                    };
                    if buf.len() < colon + 1 + len + 1 {
                        break;
                    }
                    if let Ok(v) = serde_json::from_slice(&buf[colon + 1..colon + 1 + len]) {
                        ev.lock().unwrap().push(v);
                    }
                    buf.drain(..colon + 1 + len + 1);
                }
            }
        });
        let me = Baresip {
            child,
            dir: dir.to_path_buf(),
            number: number.to_string(),
            ctrl,
            events,
        };
        // Registered: its `reginfo` says OK (the REGISTER_OK event may
        // have come before this connection).
        let mut me = me;
        let t = Instant::now();
        loop {
            me.command("reginfo", "");
            std::thread::sleep(Duration::from_millis(200));
            let ok = me.events().iter().any(|e| {
                e["response"] == true && e["data"].as_str().is_some_and(|d| d.contains("OK "))
            });
            if ok {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "baresip did not register: {:?}",
                me.events()
            );
        }
        me.clear_events();
        me
    }

    /// A command of its menu (dial, hangup, message, ...).
    pub fn command(&mut self, cmd: &str, params: &str) {
        let j = serde_json::json!({"command": cmd, "params": params, "token": "t"}).to_string();
        let _ = self.ctrl.write_all(format!("{}:{j},", j.len()).as_bytes());
    }

    pub fn events(&self) -> Vec<serde_json::Value> {
        self.events.lock().unwrap().clone()
    }

    /// Wait for an event of `kind` whose text contains `with`; returns it.
    pub fn wait_event(&self, kind: &str, with: &str, timeout: Duration) -> serde_json::Value {
        let t = Instant::now();
        loop {
            if let Some(e) = self
                .events()
                .into_iter()
                .find(|e| e["type"] == kind && e.to_string().contains(with))
            {
                return e;
            }
            assert!(
                t.elapsed() < timeout,
                "baresip never said {kind} ({with}): {:?}",
                self.events()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Forget the events so far.
    pub fn clear_events(&self) {
        self.events.lock().unwrap().clear();
    }

    /// What baresip received in its calls (S16 8 kHz mono; the newest
    /// call's dump, `*-dec.wav`), as samples.
    pub fn received(&self) -> Vec<f64> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.join("snd"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.retain(|p| p.to_string_lossy().ends_with("-dec.wav"));
        files.sort();
        let Some(f) = files.last() else {
            return Vec::new();
        };
        let data = std::fs::read(f).unwrap_or_default();
        // The data chunk of a plain 44-byte-header WAV (libsndfile's).
        let start = data
            .windows(4)
            .position(|w| w == b"data")
            .map(|i| i + 8)
            .unwrap_or(data.len());
        data[start..]
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]) as f64)
            .collect()
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Amplitude of `freq` in 8 kHz samples (Goertzel).
pub fn amplitude8k(s: &[f64], freq: f64) -> f64 {
    crate::sound::amplitude_at(s, freq, 8000.0)
}
