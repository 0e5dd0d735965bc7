//! The nftables ruleset of one bridge, applied with `nft -f -` in one
//! transaction (the old tables are replaced atomically). Rules match the
//! host veth names (`<bridge>i*` is every isolated VP), so VP starts and
//! stops never touch nftables. Which source a VP port may send from (its
//! MAC and address) is a set, `vp_src`, replaced when VPs are defined,
//! removed or change policy ([`sources_script`]) — not at start or stop.

use std::io::Write;
use std::process::{Command, Stdio};

use super::{NetError, Result, Subnet};

/// The table both families use: `cells_<bridge>`.
pub fn table_name(bridge: &str) -> String {
    format!("cells_{}", bridge.replace('-', "_"))
}

/// The ruleset for `bridge` serving `subnet`. `nat`: masquerade VP traffic
/// leaving through any other interface.
pub fn ruleset(bridge: &str, subnet: &Subnet, nat: bool) -> String {
    let t = table_name(bridge);
    let mut s = String::new();
    // "add" then "delete" then the new table: replaces it whether it existed
    // or not, in the same transaction.
    for fam in ["inet", "bridge"] {
        s.push_str(&format!("add table {fam} {t}\ndelete table {fam} {t}\n"));
    }
    let gw = subnet.gateway();
    s.push_str(&format!(
        r#"table inet {t} {{
  chain input {{
    type filter hook input priority filter; policy accept;
    # VPs reach no service of the host (only answers to the host's own
    # connections come back, and a ping of the gateway is answered).
    iifname "{bridge}" ct state established,related accept
    iifname "{bridge}" ip daddr {gw} icmp type echo-request accept
    iifname "{bridge}" drop
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    # VPs reach out; from outside only answers come in. (With br_netfilter
    # loaded, frames bridged between shared VPs pass here too, iif = oif =
    # the bridge: the first rule lets them through.)
    iifname "{bridge}" accept
    oifname "{bridge}" ct state established,related accept
    oifname "{bridge}" drop
  }}
"#
    ));
    if nat {
        s.push_str(&format!(
            r#"  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {subnet} oifname != "{bridge}" masquerade
  }}
"#
        ));
    }
    s.push_str("}\n");
    s.push_str(&format!(
        r#"table bridge {t} {{
  set vp_src {{
    type ifname . ether_addr . ipv4_addr
  }}
  chain prerouting {{
    type filter hook prerouting priority filter; policy accept;
    iifname "{bridge}i*" jump vp_port
    iifname "{bridge}s*" jump vp_port
  }}
  # A VP's port carries only its own MAC and address: no spoofed IP or ARP
  # source, no other link protocol (VPs have no IPv6 address of cells').
  chain vp_port {{
    ether type ip iifname . ether saddr . ip saddr @vp_src return
    ether type arp iifname . ether saddr . arp saddr ip @vp_src iifname . arp saddr ether . arp saddr ip @vp_src return
    drop
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    # An isolated VP's frames reach no other VP (the host is not a port).
    iifname "{bridge}i*" drop
    oifname "{bridge}i*" drop
  }}
  chain input {{
    type filter hook input priority filter; policy accept;
    # A VP's packet for another VP's address sent to the host is an attempt
    # to be routed around the bridge (a route the VP added itself).
    iifname "{bridge}i*" ip daddr {subnet} ip daddr != {gw} drop
    iifname "{bridge}s*" ip daddr {subnet} ip daddr != {gw} drop
  }}
}}
"#
    ));
    s
}

/// One VP port's only allowed source: (host veth name, MAC, address).
pub type Source = (String, [u8; 6], std::net::Ipv4Addr);

/// Replace the set of allowed sources (every defined bridged VP).
pub fn sources_script(bridge: &str, sources: &[Source]) -> String {
    let t = table_name(bridge);
    let mut s = format!("flush set bridge {t} vp_src\n");
    if !sources.is_empty() {
        let elems: Vec<String> = sources
            .iter()
            .map(|(ifname, mac, ip)| {
                let m: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
                format!("\"{ifname}\" . {} . {ip}", m.join(":"))
            })
            .collect();
        s.push_str(&format!(
            "add element bridge {t} vp_src {{ {} }}\n",
            elems.join(", ")
        ));
    }
    s
}

fn element((ifname, mac, ip): &Source) -> String {
    let m: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{ifname}\" . {} . {ip}", m.join(":"))
}

/// Add or remove one VP's source (a create or a destroy): one element, not
/// the whole set again (which grows with the number of VPs).
pub fn source_script(bridge: &str, source: &Source, add: bool) -> String {
    let t = table_name(bridge);
    if add {
        format!("add element bridge {t} vp_src {{ {} }}\n", element(source))
    } else {
        // Adding first makes the delete succeed even if it is not there.
        format!(
            "add element bridge {t} vp_src {{ {e} }}\ndelete element bridge {t} vp_src {{ {e} }}\n",
            e = element(source)
        )
    }
}

pub fn delete_script(bridge: &str) -> String {
    let t = table_name(bridge);
    ["inet", "bridge"]
        .iter()
        .map(|f| format!("add table {f} {t}\ndelete table {f} {t}\n"))
        .collect()
}

pub fn available() -> bool {
    Command::new("nft")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

pub fn apply(script: &str) -> Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            NetError::Nft(format!(
                "cannot run nft ({e}): install Debian's nftables package (scripts/install-deps does)"
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| NetError::Nft(format!("writing the ruleset: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| NetError::Nft(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetError::Nft(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_text() {
        let s = Subnet::parse("10.47.0.0/16").unwrap();
        let r = ruleset("cells0", &s, true);
        assert!(r.contains("table inet cells_cells0"));
        assert!(r.contains("ip saddr 10.47.0.0/16 oifname != \"cells0\" masquerade"));
        assert!(r.contains("iifname \"cells0i*\" drop"));
        assert!(r.contains("ip daddr 10.47.0.0/16 ip daddr != 10.47.0.1 drop"));
        assert!(r.starts_with("add table inet cells_cells0\ndelete table inet cells_cells0\n"));
        assert!(!ruleset("cells0", &s, false).contains("masquerade"));
        assert_eq!(table_name("a-b"), "cells_a_b");
        assert!(
            r.contains("iifname \"cells0\" drop"),
            "VPs reach no host service"
        );
        assert!(r.contains("ip daddr 10.47.0.1 icmp type echo-request accept"));
        assert!(r.contains("iifname \"cells0s*\" jump vp_port"));
        let src = sources_script(
            "cells0",
            &[(
                "cells0i3".into(),
                [2, 0xce, 0x11, 0, 0, 5],
                "10.47.0.5".parse().unwrap(),
            )],
        );
        assert_eq!(
            src,
            "flush set bridge cells_cells0 vp_src\nadd element bridge cells_cells0 vp_src { \"cells0i3\" . 02:ce:11:00:00:05 . 10.47.0.5 }\n"
        );
        assert_eq!(
            sources_script("cells0", &[]),
            "flush set bridge cells_cells0 vp_src\n"
        );
    }
}
