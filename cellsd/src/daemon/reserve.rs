//! What a VP holds on the host even when its definition cannot be read: its
//! slot (id range), its address and its host ports. Kept next to vp.json as
//! `reserved.json` whenever the definition is written, so that a VP whose
//! vp.json is lost or corrupt keeps them: handing its ids to another VP
//! would give that VP its files, and its address and ports would clash
//! when it is repaired.

use std::net::Ipv4Addr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{VpConfig, ID_RANGE};
use crate::layout::{write_atomic, Layout};

/// Name of the file in `vps/NAME`.
pub const RESERVED_FILE: &str = "reserved.json";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    #[serde(default)]
    pub slot: Option<u32>,
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
    /// The adb port and the forwarded host ports.
    #[serde(default)]
    pub ports: Vec<u16>,
}

impl Reservation {
    pub fn of(cfg: &VpConfig) -> Self {
        let n = &cfg.cells.network;
        Self {
            slot: Some(cfg.cells.slot),
            ip: n.ip,
            ports: n
                .adb_port
                .into_iter()
                .chain(n.ports.iter().map(|p| p.host))
                .collect(),
        }
    }

    /// Fill what is unknown from `other`.
    fn or(mut self, other: Reservation) -> Self {
        self.slot = self.slot.or(other.slot);
        self.ip = self.ip.or(other.ip);
        if self.ports.is_empty() {
            self.ports = other.ports;
        }
        self
    }

    /// What is known of an unusable VP, from (best first) its vp.json as far
    /// as it is JSON, its `reserved.json`, and the owner of its folders (VP
    /// root's host id gives the slot: the VP can only chown within its range).
    pub fn recover(layout: &Layout, name: &str, id_base: u32) -> Self {
        let from_json = std::fs::read(layout.vp_config(name))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .map(|v| from_value(&v))
            .unwrap_or_default();
        let from_file = std::fs::read(layout.vp_dir(name).join(RESERVED_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<Reservation>(&b).ok())
            .unwrap_or_default();
        let from_owner = Reservation {
            slot: [layout.vp_upper(name), layout.vp_data(name)]
                .iter()
                .find_map(|d| slot_of_owner(d, id_base)),
            ..Default::default()
        };
        from_json.or(from_file).or(from_owner)
    }
}

fn from_value(v: &serde_json::Value) -> Reservation {
    let cells = &v["cells"];
    let net = &cells["network"];
    let mut ports: Vec<u16> = net["adb_port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .into_iter()
        .collect();
    if let Some(list) = net["ports"].as_array() {
        ports.extend(
            list.iter()
                .filter_map(|p| p["host"].as_u64())
                .filter_map(|p| u16::try_from(p).ok()),
        );
    }
    Reservation {
        slot: cells["slot"].as_u64().and_then(|s| u32::try_from(s).ok()),
        ip: net["ip"].as_str().and_then(|s| s.parse().ok()),
        ports,
    }
}

fn slot_of_owner(dir: &Path, id_base: u32) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::symlink_metadata(dir).ok()?.uid();
    uid.checked_sub(id_base).map(|d| d / ID_RANGE)
}

/// Write the definition and its reservation (the reservation first: a
/// definition is never on disk without it).
pub fn write_definition(dir: &Path, cfg: &VpConfig) -> std::io::Result<()> {
    let r = serde_json::to_vec(&Reservation::of(cfg)).unwrap_or_default();
    write_atomic(&dir.join(RESERVED_FILE), &r)?;
    write_atomic(
        &dir.join(crate::layout::VP_CONFIG_FILE),
        cfg.to_json().as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_definition_keeps_what_it_held() {
        let root = std::env::temp_dir().join(format!("cells-reserve-{}", std::process::id()));
        let layout = Layout::new(root.join("state"), root.join("run"));
        let dir = layout.vp_dir("a");
        std::fs::create_dir_all(layout.vp_upper("a")).unwrap();
        // A definition that is JSON but not a valid VP: its values count.
        std::fs::write(
            layout.vp_config("a"),
            r#"{"cells":{"slot":7,"network":{"ip":"10.0.0.9","adb_port":5607,"ports":[{"host":8080,"vp":80}]}},"runtime":42}"#,
        )
        .unwrap();
        let r = Reservation::recover(&layout, "a", 1_000_000);
        assert_eq!(r.slot, Some(7));
        assert_eq!(r.ip, Some("10.0.0.9".parse().unwrap()));
        assert_eq!(r.ports, vec![5607, 8080]);
        // Garbage: reserved.json has them.
        std::fs::write(layout.vp_config("a"), b"\x00garbage").unwrap();
        let saved = Reservation {
            slot: Some(3),
            ip: Some("10.0.0.5".parse().unwrap()),
            ports: vec![5603],
        };
        std::fs::write(dir.join(RESERVED_FILE), serde_json::to_vec(&saved).unwrap()).unwrap();
        assert_eq!(Reservation::recover(&layout, "a", 1_000_000), saved);
        // Neither: the owner of upper/ still gives the slot.
        std::fs::remove_file(dir.join(RESERVED_FILE)).unwrap();
        std::os::unix::fs::chown(
            layout.vp_upper("a"),
            Some(1_000_000 + 5 * ID_RANGE + 10),
            None,
        )
        .unwrap();
        let r = Reservation::recover(&layout, "a", 1_000_000);
        assert_eq!(r.slot, Some(5));
        assert_eq!(r.ip, None);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
