//! Spare monitors: a monitor exec'd ahead of the next start, waiting in a spare cgroup.

use super::*;

impl Manager {
    /// Spawn a monitor (an exec of cellsd). A spare one first joins a spare
    /// cgroup, then waits for a request.
    pub(super) fn spawn_monitor(&self, spare: bool) -> Result<Monitor, Error> {
        let layout = &self.cfg.layout;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(layout.run.join("monitor-spare.log"))
            .map_err(failed("open the monitor log"))?;
        let mut cmd = tokio::process::Command::new(&self.cfg.self_exe);
        cmd.arg("__monitor");
        if spare {
            let n = self.spare_seq.fetch_add(1, Ordering::Relaxed);
            let rel = format!(
                "{}/{SPARE_PREFIX}{}-{n}",
                self.cfg.cgroup_parent,
                std::process::id()
            );
            let setup = SpareSetup {
                cgroup: VpCgroup::new(self.hierarchy.clone(), rel),
            };
            cmd.arg(serde_json::to_string(&setup).map_err(|e| Error::Failed(e.to_string()))?);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(failed("spawn the VP monitor"))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(Error::Failed("monitor pipes missing".into()));
        };
        Ok(Monitor {
            proc: MonitorProc::Child(child),
            stdin: Box::new(stdin),
            events:
                BufReader::new(Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Send + Unpin>)
                    .lines(),
        })
    }

    /// The spare monitor if there is one (else a fresh one); a new spare is
    /// made in the background for the next start.
    pub(super) async fn take_monitor(self: &Arc<Self>) -> Result<Monitor, Error> {
        // The next spare is made after this start (see `start`): joining its
        // cgroup blocks every fork on the machine for an RCU grace period,
        // the VP's clone included.
        let taken = self.spare.lock().await.take();
        match taken {
            Some(m) => Ok(m),
            None => self.spawn_monitor(false),
        }
    }

    /// Make sure a spare monitor waits for the next start.
    pub async fn refill_spare(&self) {
        let mut spare = self.spare.lock().await;
        if spare.is_none() {
            match self.spawn_monitor(true) {
                Ok(m) => *spare = Some(m),
                Err(e) => tracing::warn!("no spare monitor: {}", e),
            }
        }
    }

    /// Remove spare cgroups left by an earlier cellsd (their monitors ended
    /// with it, or are ended here).
    pub(super) fn remove_stale_spares(&self) {
        let parent = std::path::Path::new(&self.cfg.cgroup_parent);
        for dir in self.hierarchy.v1_dirs(parent) {
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if !name.starts_with(SPARE_PREFIX) {
                    continue;
                }
                let cg = VpCgroup::new(self.hierarchy.clone(), parent.join(&name));
                if let Err(e) = cg.destroy(Duration::from_secs(2)) {
                    tracing::warn!("stale spare cgroup {name}: {e}");
                }
            }
        }
    }
}
