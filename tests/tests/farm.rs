//! A farm from one CLI: `cellctl --host ssh://…` drives another cellsd
//! through a real SSH server (dropbear on loopback, started by the test),
//! and `cellctl farm list` shows the VPs of several hosts.

use std::process::Output;

use cells_tests::Cells;

#[test]
fn another_cellsd_over_ssh_and_a_farm_list() {
    if !cells_tests::ssh::available() {
        eprintln!("SKIP: dropbear not unpacked (scripts/install-deps) or no ssh client");
        return;
    }
    let here = Cells::new();
    let there = Cells::with_args(None, &["--id-base", "3400000"]);
    there.ok(&["template", "build", "minimal"]);
    let sshd = cells_tests::ssh::SshServer::start(&here.root.join("ssh"));
    let url = format!("ssh://root@127.0.0.1:{}", sshd.port);
    let cellctl = here.bin.join("cellctl");
    let (sock, prog) = (
        there.socket.to_str().unwrap().to_string(),
        cellctl.to_str().unwrap().to_string(),
    );
    let with_ssh = |ssh: &str, args: &[&str]| -> Output {
        here.ctl_cmd()
            .env("CELLS_SSH_COMMAND", ssh)
            .args(["--host-socket", &sock, "--host-cellctl", &prog])
            .args(args)
            .output()
            .unwrap()
    };
    let remote = |args: &[&str]| -> Output {
        let mut a = vec!["--host", url.as_str()];
        a.extend_from_slice(args);
        with_ssh(&sshd.ssh_command(), &a)
    };
    let ok = |o: Output| -> String {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };

    here.ok(&["create", "a", "--template", "minimal", "--disk", "none"]);
    here.ok(&["start", "a"]);
    // Through ssh it is the other cellsd that acts (control: it has the VP,
    // this one has not).
    ok(remote(&[
        "create",
        "b",
        "--template",
        "minimal",
        "--disk",
        "none",
    ]));
    ok(remote(&["start", "b"]));
    assert_eq!(there.status("b")["state"], "running");
    assert!(here.fails(&["status", "b"]).contains("no VP named"));
    let list = ok(remote(&["list"]));
    assert!(list.contains("\nb ") && !list.contains("\na "), "{list}");
    let st: serde_json::Value =
        serde_json::from_str(&ok(remote(&["status", "b", "--json"]))).unwrap();
    assert_eq!(st["state"], "running");
    ok(remote(&["switch", "b"]));
    assert_eq!(there.ok(&["foreground"]).trim(), "b");

    // What hands cellsd a file cannot cross SSH: refused with the reason.
    let o = remote(&["exec", "b", "--", "true"]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("cannot cross SSH"), "{e}");

    // One list for both hosts.
    let o = with_ssh(&sshd.ssh_command(), &["farm", "list", "local", &url]);
    let table = ok(o);
    let rows: Vec<&str> = table.lines().collect();
    assert!(
        rows[0].starts_with("HOST") && rows[0].contains("NAME"),
        "{table}"
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with("local") && r.contains(" a ")),
        "{table}"
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with(&url) && r.contains(" b ")),
        "{table}"
    );
    let j: serde_json::Value = serde_json::from_str(&ok(with_ssh(
        &sshd.ssh_command(),
        &["farm", "list", "local", &url, "--json"],
    )))
    .unwrap();
    let hosts: Vec<(String, String)> = j
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["host"].as_str().unwrap().to_string(),
                v["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(hosts.contains(&("local".into(), "a".into())), "{hosts:?}");
    assert!(hosts.contains(&(url.clone(), "b".into())), "{hosts:?}");

    // A host that refuses (wrong key): named, the others still listed, exit 1.
    let o = with_ssh(
        "ssh -i /nonexistent -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
        &["farm", "list", "local", &url],
    );
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(out.contains(" a "), "{out}");
    assert!(e.contains(&url) && e.contains("cannot reach cellsd"), "{e}");
    // A bad URL names the form.
    let o = with_ssh(&sshd.ssh_command(), &["--host", "root@nowhere", "list"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("ssh://[USER@]HOST[:PORT]"));
    ok(remote(&["stop", "b"]));
    assert_eq!(there.status("b")["state"], "stopped");
}
