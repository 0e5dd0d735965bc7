//! Human-readable output of list, status and template list.

use cells_api::{PowerInfo, TemplateInfo, VpInfo};

/// "3d4h", "2h05m", "4m10s", "12s".
pub fn uptime(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn render(rows: &[Vec<String>]) -> String {
    let cols = rows.first().map(Vec::len).unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, cell)| format!("{cell:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

pub fn vps(list: &[VpInfo]) -> String {
    if list.is_empty() {
        return "no VPs yet: create one with `cellctl create NAME --template minimal`\n".into();
    }
    let mut rows = vec![vec![
        "NAME".to_string(),
        "STATE".into(),
        "PID".into(),
        "TEMPLATE".into(),
        "UPTIME".into(),
        "IP".into(),
        "ADB".into(),
        "FG".into(),
    ]];
    for v in list {
        let running = v.pid != 0;
        rows.push(vec![
            v.name.clone(),
            v.state.clone(),
            if running {
                v.pid.to_string()
            } else {
                "-".into()
            },
            v.template.clone(),
            if running {
                uptime(v.uptime_secs)
            } else {
                "-".into()
            },
            if v.ip.is_empty() {
                "-".into()
            } else {
                v.ip.clone()
            },
            if v.adb.is_empty() {
                "-".into()
            } else {
                v.adb.clone()
            },
            if v.foreground {
                "*".into()
            } else {
                String::new()
            },
        ]);
    }
    render(&rows)
}

pub fn status(v: &VpInfo) -> String {
    let mut rows: Vec<Vec<String>> = vec![
        vec!["name:".into(), v.name.clone()],
        vec!["state:".into(), v.state.clone()],
    ];
    if v.pid != 0 {
        rows.push(vec!["pid:".into(), v.pid.to_string()]);
        rows.push(vec!["uptime:".into(), uptime(v.uptime_secs)]);
        rows.push(vec![
            "template:".into(),
            format!("{} (build {})", v.template, v.template_build),
        ]);
    } else {
        rows.push(vec!["template:".into(), v.template.clone()]);
    }
    rows.push(vec![
        "foreground:".into(),
        if v.foreground { "yes" } else { "no" }.into(),
    ]);
    rows.push(vec!["hostname:".into(), v.hostname.clone()]);
    rows.push(vec![
        "isolation:".into(),
        if v.privileged {
            "privileged (no user namespace)".into()
        } else {
            "user namespace".to_string()
        },
    ]);
    rows.push(vec![
        "memory:".into(),
        if v.memory_limit == 0 {
            "no limit".into()
        } else {
            bytes(v.memory_limit)
        },
    ]);
    rows.push(vec![
        "disk:".into(),
        if v.disk_limit == 0 {
            "no limit".into()
        } else {
            bytes(v.disk_limit)
        },
    ]);
    rows.push(vec![
        "cpus:".into(),
        if v.cpus == 0.0 {
            "no limit".into()
        } else {
            format!("{}", v.cpus)
        },
    ]);
    rows.push(vec!["pids:".into(), v.pids_limit.to_string()]);
    rows.push(vec!["background:".into(), v.background.clone()]);
    rows.push(vec![
        "network:".into(),
        if v.ip.is_empty() {
            v.network.clone()
        } else {
            format!("{} ({})", v.network, v.ip)
        },
    ]);
    if !v.adb.is_empty() {
        rows.push(vec!["adb:".into(), v.adb.clone()]);
    }
    rows.push(vec!["seccomp:".into(), v.seccomp.clone()]);
    if !v.devices.is_empty() {
        rows.push(vec!["devices:".into(), v.devices.join(" ")]);
    }
    if !v.error.is_empty() {
        rows.push(vec!["error:".into(), v.error.clone()]);
    }
    render(&rows)
}

pub fn power(p: &PowerInfo) -> String {
    let mut vps: Vec<(&String, &Vec<String>)> = p.wakelocks.iter().collect();
    vps.sort();
    let mut blockers: Vec<&str> = p.blocked_by.iter().map(String::as_str).collect();
    blockers.sort();
    let mut rows: Vec<Vec<String>> = vec![vec![
        "device:".into(),
        if p.suspend_blocked {
            format!("awake: suspend blocked by {}", blockers.join(", "))
        } else {
            "suspend allowed (no VP holds a wakelock)".into()
        },
    ]];
    rows.push(vec![
        "screen:".into(),
        format!(
            "{}{}",
            if p.screen_on { "on" } else { "off" },
            if p.suspend_requested {
                " (the foreground asked to suspend)"
            } else {
                ""
            }
        ),
    ]);
    rows.push(vec![
        "foreground:".into(),
        if p.foreground.is_empty() {
            "none".into()
        } else {
            p.foreground.clone()
        },
    ]);
    rows.push(vec![
        "backend:".into(),
        if p.backend_error.is_empty() {
            p.backend.clone()
        } else {
            format!("{} (error: {})", p.backend, p.backend_error)
        },
    ]);
    if !p.last_request.is_empty() {
        rows.push(vec!["last request:".into(), p.last_request.clone()]);
    }
    let mut out = render(&rows);
    if vps.is_empty() {
        out.push_str("no VP is running\n");
        return out;
    }
    let mut t = vec![vec!["VP".to_string(), "STATE".into(), "WAKELOCKS".into()]];
    for (vp, locks) in vps {
        t.push(vec![
            vp.clone(),
            if p.frozen.contains(vp) {
                "frozen".into()
            } else {
                "running".into()
            },
            if locks.is_empty() {
                "-".into()
            } else {
                locks.join(" ")
            },
        ]);
    }
    out.push('\n');
    out.push_str(&render(&t));
    out
}

pub fn templates(list: &[TemplateInfo]) -> String {
    if list.is_empty() {
        return "no templates: cellsd finds recipes in its --templates-dir\n".into();
    }
    let mut rows = vec![vec![
        "NAME".to_string(),
        "BUILD".into(),
        "FILES".into(),
        "SIZE".into(),
        "VPS".into(),
        "DESCRIPTION".into(),
    ]];
    for t in list {
        rows.push(vec![
            t.name.clone(),
            if t.built {
                t.build.clone()
            } else {
                "not built".into()
            },
            if t.built {
                t.files.to_string()
            } else {
                "-".into()
            },
            if t.built { bytes(t.bytes) } else { "-".into() },
            t.vps.to_string(),
            t.description.clone(),
        ]);
    }
    render(&rows)
}

/// `cellctl port list`: one forward per line.
pub fn ports(ports: &[(u16, u16, String, bool)]) -> String {
    let mut rows = vec![vec![
        "HOST".to_string(),
        "VP".to_string(),
        "".to_string(),
        "STATE".to_string(),
    ]];
    for (h, v, kind, active) in ports {
        rows.push(vec![
            format!("127.0.0.1:{h}"),
            v.to_string(),
            kind.clone(),
            if *active { "listening" } else { "inactive" }.to_string(),
        ]);
    }
    render(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptimes_read_well() {
        assert_eq!(uptime(12), "12s");
        assert_eq!(uptime(250), "4m10s");
        assert_eq!(uptime(7500), "2h05m");
        assert_eq!(uptime(3 * 86400 + 4 * 3600), "3d4h");
    }

    #[test]
    fn table_aligns_columns() {
        let list = vec![
            VpInfo {
                name: "work".into(),
                state: "running".into(),
                pid: 42,
                template: "minimal".into(),
                uptime_secs: 5,
                foreground: true,
                ..Default::default()
            },
            VpInfo {
                name: "personal".into(),
                state: "stopped".into(),
                template: "minimal".into(),
                ..Default::default()
            },
        ];
        let t = vps(&list);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("NAME      STATE"));
        assert!(lines[1].contains("42") && lines[1].ends_with('*'));
        assert!(lines[2].contains("personal  stopped  -"));
    }

    #[test]
    fn sizes() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(8596734), "8.2 MiB");
    }
}
