//! Where cellsd keeps its state and its socket by default.

/// cellsd's state folder (VP definitions, data, templates).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/cells";
/// cellsd's run folder (the socket, running VPs' state).
pub const DEFAULT_RUN_DIR: &str = "/run/cells";
/// The control socket, in the run folder.
pub const SOCKET_NAME: &str = "cellsd.sock";
