//! The manager's error: what went wrong, with the module error it came
//! from as its source where there is one. Every message says what went
//! wrong and what to do. The D-Bus error (`org.cells.Error.*`, the
//! API's [`CellsError`]) is made from it only at the edge, by the server.

use crate::api::CellsError;
use crate::cgroup::CgroupError;
use crate::config::ConfigError;
use crate::devices::model::PolicyError;
use crate::devices::network::NetError;
use crate::devices::registry::DeviceError;
use crate::name::NameError;
use crate::template::TemplateError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    UnknownVp(String),
    #[error("{0}")]
    InvalidName(String),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    UnknownTemplate(String),
    #[error("{0}")]
    TemplateNotBuilt(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    AlreadyRunning(String),
    #[error("{0}")]
    NotRunning(String),
    /// The VP runs, and the request needs it stopped.
    #[error("{0}")]
    Running(String),
    #[error("{0}")]
    Busy(String),
    /// A failure the manager explains itself.
    #[error("{0}")]
    Failed(String),
    /// A system call or file operation of the manager's own.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// The cgroup freezer refused.
    #[error("{doing} VP '{vp}': {source}")]
    Freezer {
        doing: &'static str,
        vp: String,
        #[source]
        source: CgroupError,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Network(#[from] NetError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    /// An error of the API's own (a name check of cells-api's).
    #[error("{}", .0.message())]
    Api(CellsError),
}

impl Error {
    pub fn unknown_vp(name: &str) -> Self {
        Self::Api(CellsError::unknown_vp(name))
    }
    pub fn not_running(name: &str) -> Self {
        Self::Api(CellsError::not_running(name))
    }
    pub fn already_running(name: &str) -> Self {
        Self::Api(CellsError::already_running(name))
    }
}

impl From<CellsError> for Error {
    fn from(e: CellsError) -> Self {
        Self::Api(e)
    }
}

/// `map_err(failed("what"))`: an I/O error of the manager's, with what it
/// was doing.
pub fn failed(what: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        what: what.to_string(),
        source,
    }
}

/// The edge: the D-Bus error a client gets, with the whole message (its
/// sources' too) and the error name that says which kind it is.
impl From<Error> for CellsError {
    fn from(e: Error) -> Self {
        let m = e.to_string();
        match e {
            Error::UnknownVp(_) => CellsError::UnknownVp(m),
            Error::InvalidName(_) | Error::Name(_) => CellsError::InvalidName(m),
            Error::InvalidArgument(_) | Error::Policy(_) | Error::Config(_) => {
                CellsError::InvalidArgument(m)
            }
            Error::UnknownTemplate(_) => CellsError::UnknownTemplate(m),
            Error::TemplateNotBuilt(_) => CellsError::TemplateNotBuilt(m),
            Error::AlreadyExists(_) => CellsError::AlreadyExists(m),
            Error::AlreadyRunning(_) => CellsError::AlreadyRunning(m),
            Error::NotRunning(_) => CellsError::NotRunning(m),
            Error::Running(_) => CellsError::Running(m),
            Error::Busy(_) => CellsError::Busy(m),
            Error::Api(e) => e,
            Error::Failed(_)
            | Error::Io { .. }
            | Error::Device(_)
            | Error::Cgroup(_)
            | Error::Freezer { .. }
            | Error::Network(_)
            | Error::Template(_)
            | Error::Seccomp(_) => CellsError::Failed(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_edge_keeps_the_message_and_names_the_kind() {
        let e: CellsError = Error::NotRunning("VP 'a' is not running".into()).into();
        assert!(matches!(&e, CellsError::NotRunning(m) if m == "VP 'a' is not running"));
        let io = std::io::Error::from_raw_os_error(libc::ENOSPC);
        let e: CellsError = failed("write vp.json")(io).into();
        assert!(
            matches!(&e, CellsError::Failed(m) if m.starts_with("write vp.json: No space left")),
            "{e:?}"
        );
        let e: CellsError = Error::unknown_vp("x").into();
        assert!(matches!(&e, CellsError::UnknownVp(m) if m.contains("cellctl create x")));
        let e: CellsError =
            Error::from(crate::name::validate("VP", "Bad Name").unwrap_err()).into();
        assert!(matches!(e, CellsError::InvalidName(_)));
    }

    #[test]
    fn an_error_keeps_its_source() {
        use std::error::Error as _;
        let e = failed("open the state dir")(std::io::Error::from_raw_os_error(libc::EACCES));
        assert!(e.source().is_some());
        let e = Error::from(DeviceError::Refused("no panel".into()));
        assert_eq!(e.to_string(), "no panel");
    }
}
