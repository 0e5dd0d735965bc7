//! Who may use the control API: root, or a member (primary or
//! supplementary group) of the `cells` group where the system has one. cellsd
//! checks every connection's peer credentials with [`authorize`]; cellctl
//! uses [`cells_group`] to say why it was refused.

/// gid of the `cells` group, if the system has one.
pub fn cells_group() -> Option<u32> {
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == "cells").then_some(())?;
        f.next()?;
        f.next()?.parse().ok()
    })
}

/// Is the peer root or in the `cells` group (primary or supplementary)?
pub fn authorize(uid: u32, gid: u32, pid: Option<i32>) -> bool {
    if uid == 0 {
        return true;
    }
    let Some(cells) = cells_group() else {
        return false;
    };
    if gid == cells {
        return true;
    }
    // Supplementary groups are not in SO_PEERCRED; read them from /proc.
    pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Groups:").map(|g| g.to_string()))
        })
        .map(|g| g.split_whitespace().any(|x| x.parse() == Ok(cells)))
        .unwrap_or(false)
}

/// Let only root and the `cells` group connect to one of cellsd's sockets
/// (mode 0660, group `cells`; 0600 where there is no such group).
pub fn restrict_socket(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match cells_group() {
        Some(gid) => {
            std::os::unix::fs::chown(path, Some(0), Some(gid))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        }
        None => std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)),
    }
}
