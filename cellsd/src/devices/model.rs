//! The device model: which devices a VP has and how (Cells' device
//! namespaces). Every device has a name, a default policy and the policies
//! it supports:
//!
//! - `none`: the VP has no node of it;
//! - `shared`: the VP uses it in the background too (its own instance, or a
//!   multiplexed one every VP uses at once);
//! - `foreground`: exclusive, it acts only while the VP is the foreground
//!   (the panel shows only the foreground's framebuffer, the panel's input
//!   reaches only the foreground);
//! - `duck` (audio): in the background too, lowered (−12 dB).
//!
//! A VP's choices are kept in vp.json (`cells.devices`, only what differs
//! from the defaults) and given at create time (`cellctl create --device
//! NAME=POLICY`). This module is pure: parsing and lookup. Each device's
//! spec is in its own module; [`super::registry::DEVICES`] lists them.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// How a VP has a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    None,
    Shared,
    Foreground,
    Duck,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::None => "none",
            Policy::Shared => "shared",
            Policy::Foreground => "foreground",
            Policy::Duck => "duck",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(Policy::None),
            "shared" => Some(Policy::Shared),
            "foreground" => Some(Policy::Foreground),
            "duck" => Some(Policy::Duck),
            _ => None,
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One device of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceSpec {
    pub name: &'static str,
    /// The policy of a VP whose definition names none.
    pub default: Policy,
    /// The policies this device supports.
    pub policies: &'static [Policy],
    /// What the VP sees, and what each policy means for it.
    pub about: &'static str,
}

pub const DISPLAY: &str = "display";
pub const INPUT: &str = "input";
pub const POWER: &str = "power";
pub const BINDER: &str = "binder";
pub const NETWORK: &str = "network";

/// The device named `name`.
pub fn spec(name: &str) -> Option<&'static DeviceSpec> {
    specs().find(|d| d.name == name)
}

/// Every device's spec, in the registry's order (the order a switch
/// deactivates and activates them).
pub fn specs() -> impl Iterator<Item = &'static DeviceSpec> {
    super::registry::specs()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("device setting '{0}' is not NAME=POLICY: write it as e.g. display=none")]
    Syntax(String),
    #[error("no device named '{name}': the devices are {}", names())]
    UnknownDevice { name: String },
    #[error(
        "'{policy}' is not a policy of the {device} device: use {}",
        allowed(device)
    )]
    NotSupported { device: String, policy: String },
    #[error("the {device} device is given twice ({first} and {second}): give it once")]
    Twice {
        device: String,
        first: String,
        second: String,
    },
}

fn names() -> String {
    specs().map(|d| d.name).collect::<Vec<_>>().join(", ")
}

fn allowed(device: &str) -> String {
    spec(device)
        .map(|d| {
            d.policies
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(" or ")
        })
        .unwrap_or_default()
}

/// A VP's device policies: only those that differ from the defaults are
/// kept (so a VP made before a device existed gets its default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DevicePolicies(BTreeMap<String, Policy>);

impl DevicePolicies {
    /// Parse `NAME=POLICY` settings (as `cellctl create --device` gives
    /// them, also comma-separated).
    pub fn parse<S: AsRef<str>>(settings: &[S]) -> Result<Self, PolicyError> {
        let mut given: BTreeMap<String, Policy> = BTreeMap::new();
        for item in settings
            .iter()
            .flat_map(|s| s.as_ref().split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let (name, policy) = item
                .split_once('=')
                .ok_or_else(|| PolicyError::Syntax(item.to_string()))?;
            let (name, policy) = (name.trim(), policy.trim());
            let d = spec(name).ok_or_else(|| PolicyError::UnknownDevice {
                name: name.to_string(),
            })?;
            let p = Policy::parse(policy)
                .filter(|p| d.policies.contains(p))
                .ok_or_else(|| PolicyError::NotSupported {
                    device: d.name.to_string(),
                    policy: policy.to_string(),
                })?;
            if let Some(first) = given.insert(d.name.to_string(), p) {
                return Err(PolicyError::Twice {
                    device: d.name.to_string(),
                    first: first.to_string(),
                    second: p.to_string(),
                });
            }
        }
        given.retain(|n, p| spec(n).is_some_and(|d| d.default != *p));
        Ok(Self(given))
    }

    /// The VP's policy for `device` (its default where none was given).
    pub fn get(&self, device: &str) -> Policy {
        self.0
            .get(device)
            .copied()
            .or_else(|| spec(device).map(|d| d.default))
            .unwrap_or(Policy::None)
    }

    /// Whether the VP has the device at all.
    pub fn has(&self, device: &str) -> bool {
        self.get(device) != Policy::None
    }

    /// Set one device's policy (kept only if it is not the default).
    pub fn set(&mut self, device: &str, policy: Policy) {
        match spec(device) {
            Some(d) if d.default != policy => {
                self.0.insert(d.name.to_string(), policy);
            }
            _ => {
                self.0.remove(device);
            }
        }
    }

    /// Every device with the VP's policy, in the model's order.
    pub fn all(&self) -> Vec<(&'static str, Policy)> {
        specs().map(|d| (d.name, self.get(d.name))).collect()
    }

    pub fn is_default(&self) -> bool {
        self.0.is_empty()
    }

    /// What a vp.json may hold that this cellsd does not know (a device
    /// or policy of a newer cellsd): the error that says so.
    pub fn check(&self) -> Result<(), PolicyError> {
        for (n, p) in &self.0 {
            let d = spec(n).ok_or_else(|| PolicyError::UnknownDevice { name: n.clone() })?;
            if !d.policies.contains(p) {
                return Err(PolicyError::NotSupported {
                    device: n.clone(),
                    policy: p.to_string(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_where_nothing_is_given() {
        let p = DevicePolicies::default();
        assert_eq!(p.get(DISPLAY), Policy::Foreground);
        assert_eq!(p.get(INPUT), Policy::Foreground);
        assert_eq!(p.get(POWER), Policy::Shared);
        assert_eq!(p.get(BINDER), Policy::Shared);
        assert_eq!(p.get(NETWORK), Policy::Shared);
        assert!(p.has(DISPLAY));
        assert_eq!(p.all().len(), specs().count());
    }

    #[test]
    fn parses_settings_and_keeps_only_what_differs() {
        let p = DevicePolicies::parse(&["display=none", "input=none,binder=shared"]).unwrap();
        assert_eq!(p.get(DISPLAY), Policy::None);
        assert_eq!(p.get(INPUT), Policy::None);
        assert_eq!(p.get(BINDER), Policy::Shared);
        assert!(!p.has(DISPLAY));
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, r#"{"display":"none","input":"none"}"#);
        let back: DevicePolicies = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
        assert!(DevicePolicies::parse(&["display=foreground"])
            .unwrap()
            .is_default());
    }

    #[test]
    fn bad_settings_say_what_to_write() {
        let e = |s: &str| DevicePolicies::parse(&[s]).unwrap_err().to_string();
        assert_eq!(
            e("display"),
            "device setting 'display' is not NAME=POLICY: write it as e.g. display=none"
        );
        assert_eq!(
            e("camera=none"),
            "no device named 'camera': the devices are display, input, power, binder, network, logger, sensors, lights, alarm, audio, telephony"
        );
        assert_eq!(
            e("display=shared"),
            "'shared' is not a policy of the display device: use foreground or none"
        );
        assert_eq!(
            e("binder=foreground"),
            "'foreground' is not a policy of the binder device: use shared or none"
        );
        assert_eq!(
            e("input=none,input=foreground"),
            "the input device is given twice (none and foreground): give it once"
        );
    }

    #[test]
    fn a_vp_json_from_a_newer_cellsd_is_refused_clearly() {
        let p: DevicePolicies = serde_json::from_str(r#"{"camera":"shared"}"#).unwrap();
        assert!(p.check().unwrap_err().to_string().contains("'camera'"));
        let p: DevicePolicies = serde_json::from_str(r#"{"display":"shared"}"#).unwrap();
        assert!(p.check().is_err());
        assert!(DevicePolicies::default().check().is_ok());
    }

    #[test]
    fn every_default_is_a_supported_policy() {
        for d in specs() {
            assert!(d.policies.contains(&d.default), "{}", d.name);
            assert!(!d.about.is_empty());
        }
    }
}
