//! What a switch leaves to be written (the foreground file, the VPs' CPU
//! weights) is written by a thread of its own, in the order it was asked
//! for, off the switch's path: a switch returns once the panel, the input
//! and the power state moved. The last of several quick switches wins,
//! as it would written at once.

use std::path::PathBuf;
use std::sync::mpsc;

use crate::cgroup::VpCgroup;

pub(super) enum Write {
    /// The foreground VP (None: no file), for a cellsd restart.
    Foreground(PathBuf, Option<String>),
    /// A VP's CPU weight (its cgroup).
    CpuWeight(String, VpCgroup, u16),
    /// Answer once everything asked for before is written.
    Flush(mpsc::Sender<()>),
}

/// The writer thread's queue.
pub(super) struct Writer(mpsc::Sender<Write>);

impl Writer {
    pub(super) fn start() -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Write>();
        std::thread::Builder::new()
            .name("switch-writer".into())
            .spawn(move || {
                for w in rx {
                    apply(w);
                }
            })?;
        Ok(Self(tx))
    }

    pub(super) fn send(&self, w: Write) {
        // The thread lives as long as cellsd; if it died, write here.
        if let Err(mpsc::SendError(w)) = self.0.send(w) {
            apply(w);
        }
    }

    /// Wait until everything sent before is written.
    pub(super) fn flush(&self) {
        let (tx, rx) = mpsc::channel();
        self.send(Write::Flush(tx));
        let _ = rx.recv();
    }
}

fn apply(w: Write) {
    match w {
        Write::Foreground(path, fg) => {
            let _ = match fg {
                Some(n) => std::fs::write(&path, n.as_bytes()),
                None => std::fs::remove_file(&path),
            };
        }
        Write::CpuWeight(vp, cgroup, weight) => {
            if let Err(e) = cgroup.set_cpu_weight(weight) {
                tracing::debug!(vp = vp.as_str(), "CPU weight {weight} not set: {e}");
            }
        }
        Write::Flush(done) => {
            let _ = done.send(());
        }
    }
}
