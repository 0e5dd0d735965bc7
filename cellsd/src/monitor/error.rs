//! The monitor's error: which step of a start failed and why, with the
//! error it came from as its source. cellsd gets its message (the
//! `Failed` event), which it passes on to the client.

use crate::devices::registry::DeviceError;

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// A system call or file operation: what the monitor was doing.
    #[error("{what}: {source}")]
    Step {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A failure the monitor explains itself.
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Rootfs(#[from] crate::rootfs::RootfsError),
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::CgroupError),
    #[error(transparent)]
    Disk(#[from] crate::disk::DiskError),
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    #[error("the {device} device: {source}")]
    Device {
        device: &'static str,
        #[source]
        source: DeviceError,
    },
    /// An error of a larger step (creating the VP's devices, ...).
    #[error("{what}: {source}")]
    During {
        what: String,
        #[source]
        source: Box<MonitorError>,
    },
}

impl From<String> for MonitorError {
    fn from(m: String) -> Self {
        Self::Failed(m)
    }
}

impl From<&str> for MonitorError {
    fn from(m: &str) -> Self {
        Self::Failed(m.to_string())
    }
}

impl MonitorError {
    /// This error, as part of `what`.
    pub fn during(self, what: impl Into<String>) -> Self {
        Self::During {
            what: what.into(),
            source: Box::new(self),
        }
    }
}

/// `map_err(step("what"))`: an error of a step, with what it was.
pub fn step<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
    what: &str,
) -> impl FnOnce(E) -> MonitorError + '_ {
    move |e| MonitorError::Step {
        what: what.to_string(),
        source: e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_step_and_keep_the_source() {
        use std::error::Error as _;
        let e = step("mount the VP's overlay root")(nix::errno::Errno::EINVAL);
        assert_eq!(
            e.to_string(),
            "mount the VP's overlay root: EINVAL: Invalid argument"
        );
        assert!(e.source().is_some());
        let e = e.during("creating the VP's devices");
        assert!(e
            .to_string()
            .starts_with("creating the VP's devices: mount the VP's overlay root"));
    }
}
