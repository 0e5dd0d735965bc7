//! cells-api-probe SOCKET: connect to cellsd's control socket as whoever
//! runs this, read the `org.cells.Manager1` interface by introspection, call
//! every method of it with empty arguments (empty strings, zeros, empty
//! arrays and dictionaries: nothing a VP is named) and print one line per
//! method: `METHOD ok` or `METHOD ERROR-NAME`. The escape suite runs it as
//! `nobody` (every method must be refused) and as root (none may be).
//! Methods come from the interface itself, so a new method is covered
//! without changing this tool; an argument type it cannot make is printed
//! as `METHOD unsupported-signature T`.

use std::collections::HashMap;

use zbus::zvariant::{StructureBuilder, Value};

const INTERFACE: &str = "org.cells.Manager1";
const PATH: &str = "/org/cells/Manager1";

/// (method, the type of each of its in-arguments), from introspection XML.
fn methods(xml: &str) -> Vec<(String, Vec<String>)> {
    let attr = |tag: &str, name: &str| -> Option<String> {
        let key = format!("{name}=\"");
        let i = tag.find(&key)? + key.len();
        Some(tag[i..].split('"').next()?.to_string())
    };
    let Some(start) = xml.find(&format!("<interface name=\"{INTERFACE}\"")) else {
        return Vec::new();
    };
    let body = &xml[start..];
    let body = &body[..body.find("</interface>").unwrap_or(body.len())];
    let mut out = Vec::new();
    for m in body.split("<method ").skip(1) {
        let m = &m[..m.find("</method>").unwrap_or(m.len())];
        let Some(name) = attr(m, "name") else {
            continue;
        };
        // <method name="X"/>: no arguments (what follows is not its own).
        if m.split('>').next().is_some_and(|h| h.ends_with('/')) {
            out.push((name, Vec::new()));
            continue;
        }
        let args = m
            .split("<arg ")
            .skip(1)
            .filter(|a| attr(a, "direction").as_deref() != Some("out"))
            .filter_map(|a| attr(a, "type"))
            .collect();
        out.push((name, args));
    }
    out
}

/// An empty value of D-Bus type `t`.
fn empty(t: &str) -> Option<Value<'static>> {
    Some(match t {
        "s" => Value::from(String::new()),
        "b" => Value::from(false),
        "y" => Value::from(0u8),
        "q" => Value::from(0u16),
        "n" => Value::from(0i16),
        "u" => Value::from(0u32),
        "i" => Value::from(0i32),
        "t" => Value::from(0u64),
        "x" => Value::from(0i64),
        "d" => Value::from(0f64),
        "as" => Value::from(Vec::<String>::new()),
        "ay" => Value::from(Vec::<u8>::new()),
        "ad" => Value::from(Vec::<f64>::new()),
        "a{sv}" => Value::from(HashMap::<String, Value<'static>>::new()),
        "a{sh}" => Value::from(HashMap::<String, zbus::zvariant::Fd<'static>>::new()),
        "ah" => Value::from(Vec::<zbus::zvariant::Fd<'static>>::new()),
        "(uuau)" => Value::from((0u32, 0u32, Vec::<u32>::new())),
        // An fd: /dev/null (read: nothing; written: dropped).
        "h" => {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
                .ok()?;
            Value::from(zbus::zvariant::Fd::from(std::os::fd::OwnedFd::from(f)))
        }
        _ => return None,
    })
}

async fn run(socket: &str) -> Result<(), String> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| format!("connect {socket}: {e}"))?;
    let conn = zbus::connection::Builder::unix_stream(stream)
        .p2p()
        .build()
        .await
        .map_err(|e| format!("D-Bus handshake: {e}"))?;
    let xml: String = conn
        .call_method(
            None::<&str>,
            PATH,
            Some("org.freedesktop.DBus.Introspectable"),
            "Introspect",
            &(),
        )
        .await
        .map_err(|e| format!("Introspect: {e}"))?
        .body()
        .deserialize()
        .map_err(|e| format!("Introspect's answer: {e}"))?;
    let all = methods(&xml);
    if all.is_empty() {
        return Err(format!("no methods of {INTERFACE} in:\n{xml}"));
    }
    for (name, args) in all {
        let mut values = Vec::new();
        for t in &args {
            match empty(t) {
                Some(v) => values.push(v),
                None => {
                    println!("{name} unsupported-signature {t}");
                    break;
                }
            }
        }
        if values.len() != args.len() {
            continue;
        }
        let reply = if values.is_empty() {
            conn.call_method(None::<&str>, PATH, Some(INTERFACE), name.as_str(), &())
                .await
        } else {
            let body = values
                .into_iter()
                .fold(StructureBuilder::new(), |b, v| b.append_field(v))
                .build()
                .map_err(|e| format!("{name}: arguments: {e}"))?;
            conn.call_method(None::<&str>, PATH, Some(INTERFACE), name.as_str(), &body)
                .await
        };
        match reply {
            Ok(_) => println!("{name} ok"),
            Err(zbus::Error::MethodError(e, _, _)) => println!("{name} {e}"),
            Err(e) => println!("{name} failed: {e}"),
        }
    }
    Ok(())
}

fn main() {
    let Some(socket) = std::env::args().nth(1) else {
        eprintln!("usage: cells-api-probe SOCKET");
        std::process::exit(2);
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cells-api-probe: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(&socket)) {
        eprintln!("cells-api-probe: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_methods_and_their_in_arguments() {
        let xml = r#"<node><interface name="org.freedesktop.DBus.Peer"><method name="Ping"/></interface>
<interface name="org.cells.Manager1">
  <method name="Stop"><arg name="name" type="s" direction="in"/><arg name="timeout_secs" type="u" direction="in"/></method>
  <method name="List"><arg type="aa{sv}" direction="out"/></method>
  <method name="Next"/>
  <signal name="ForegroundChanged"><arg name="name" type="s"/></signal>
</interface></node>"#;
        assert_eq!(
            methods(xml),
            vec![
                ("Stop".to_string(), vec!["s".to_string(), "u".to_string()]),
                ("List".to_string(), vec![]),
                ("Next".to_string(), vec![]),
            ]
        );
        assert!(empty("a{sv}").is_some());
        assert!(empty("(ii)").is_none());
    }
}
