//! The options of `Create` (an `a{sv}`) and the state folder's path rules.

use super::*;

/// Parse the `a{sv}` options of `Create`.
pub fn create_options(
    opts: &HashMap<String, zbus::zvariant::OwnedValue>,
) -> Result<CreateOptions, Error> {
    use zbus::zvariant::Value;
    let bad = |k: &str, want: &str| Error::InvalidArgument(format!("option '{k}' must be {want}"));
    let mut o = CreateOptions::default();
    for (k, v) in opts {
        let v: &Value = v;
        let text = || match v {
            Value::Str(s) => Some(s.to_string()),
            _ => None,
        };
        match k.as_str() {
            "template" => o.template = text().ok_or_else(|| bad(k, "a string"))?,
            "hostname" => o.hostname = Some(text().ok_or_else(|| bad(k, "a string"))?),
            "memory" => {
                let s = match v {
                    Value::Str(s) => s.to_string(),
                    Value::U64(n) => n.to_string(),
                    Value::I64(n) => n.to_string(),
                    _ => return Err(bad(k, "a size such as \"512M\"")),
                };
                o.memory = Some(if matches!(s.trim(), "none" | "unlimited") {
                    config::NO_LIMIT
                } else {
                    config::parse_memory(&s).map_err(|e| Error::InvalidArgument(e.to_string()))?
                });
            }
            "disk" => {
                let s = match v {
                    Value::Str(s) => s.to_string(),
                    Value::U64(n) => n.to_string(),
                    _ => return Err(bad(k, "a size such as \"4G\" or \"none\"")),
                };
                o.disk = Some(if matches!(s.trim(), "none" | "unlimited") {
                    config::NO_LIMIT
                } else {
                    config::parse_memory(&s)
                        .map_err(|_| Error::InvalidArgument(config::ConfigError::BadDisk(s.clone()).to_string()))?
                });
            }
            "cpus" => {
                o.cpus = Some(match v {
                    Value::F64(f) => *f,
                    Value::Str(s) => config::parse_cpus(s)
                        .map_err(|e| Error::InvalidArgument(e.to_string()))?,
                    _ => return Err(bad(k, "a number of CPUs")),
                })
            }
            "pids" => {
                o.pids = Some(match v {
                    Value::U32(n) => *n as i64,
                    Value::I32(n) => *n as i64,
                    Value::U64(n) => *n as i64,
                    Value::I64(n) => *n,
                    _ => return Err(bad(k, "an integer")),
                })
            }
            "color" => {
                let c = text().ok_or_else(|| bad(k, "a string such as \"ff0000\""))?;
                o.color = Some(c);
            }
            "privileged" => {
                o.privileged = match v {
                    Value::Bool(b) => *b,
                    _ => return Err(bad(k, "a boolean")),
                }
            }
            "background" => {
                let t = text().ok_or_else(|| bad(k, "a string such as \"freeze-after=30s\""))?;
                o.background = Some(
                    t.parse()
                        .map_err(|e: config::ConfigError| Error::InvalidArgument(e.to_string()))?,
                );
            }
            "seccomp" => {
                let t = text().ok_or_else(|| bad(k, "a string: default, off or a profile's JSON"))?;
                o.seccomp = Some(
                    config::Seccomp::parse(&t)
                        .map_err(|e| Error::InvalidArgument(e.to_string()))?,
                );
            }
            "network" => {
                let t = text().ok_or_else(|| bad(k, "a string: isolated, shared-bridge or none"))?;
                o.network = Some(
                    crate::devices::network::NetworkPolicy::parse(&t)
                        .map_err(|e| Error::InvalidArgument(e.to_string()))?,
                );
            }
            "devices" => {
                let t = text().ok_or_else(|| bad(k, "a string such as \"display=none,input=none\""))?;
                o.devices = Some(
                    crate::devices::model::DevicePolicies::parse(&[t])
                        .map_err(|e| Error::InvalidArgument(e.to_string()))?,
                );
            }
            other => {
                return Err(Error::InvalidArgument(format!(
                    "unknown option '{other}': known options are template, hostname, memory, cpus, pids, color, privileged, background, network, seccomp, devices"
                )))
            }
        }
    }
    // The network device is the network policy: none is `--network none`.
    use crate::devices::model::{Policy, NETWORK};
    use crate::devices::network::NetworkPolicy;
    if let Some(d) = o.devices.as_mut().filter(|d| !d.has(NETWORK)) {
        match o.network {
            Some(p) if p != NetworkPolicy::None => {
                return Err(Error::InvalidArgument(
                    config::ConfigError::NetworkConflict(p.as_str().to_string()).to_string(),
                ))
            }
            _ => o.network = Some(NetworkPolicy::None),
        }
        d.set(NETWORK, Policy::Shared);
    }
    if o.template.is_empty() {
        return Err(Error::InvalidArgument(
            "no template given: pass --template NAME (see `cellctl template list`)".into(),
        ));
    }
    Ok(o)
}

/// Check that the state dir can hold overlay paths (overlay's option string
/// cannot quote ',' or ':').
pub fn check_state_dir(p: &Path) -> Result<(), String> {
    let s = p.to_string_lossy();
    if s.contains(',') || s.contains(':') || s.contains('\\') {
        return Err(format!(
            "state dir '{s}' contains ',', ':' or '\\', which overlayfs options cannot carry: choose another path"
        ));
    }
    if !p.is_absolute() {
        return Err(format!("state dir '{s}' must be an absolute path"));
    }
    Ok(())
}

/// Parse the `a{sv}` options of `OciCreate`: those of `Create` but the
/// template (an OCI container's root is its bundle's).
pub fn oci_options(
    opts: &HashMap<String, zbus::zvariant::OwnedValue>,
) -> Result<CreateOptions, Error> {
    if opts.contains_key("template") {
        return Err(Error::InvalidArgument(
            "an OCI container has no template: its root is the bundle's".into(),
        ));
    }
    let mut with = opts.clone();
    with.insert(
        "template".into(),
        zbus::zvariant::Value::from("oci")
            .try_to_owned()
            .map_err(|e| Error::Failed(e.to_string()))?,
    );
    let mut o = create_options(&with)?;
    o.template = String::new();
    Ok(o)
}
