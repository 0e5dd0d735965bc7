//! `cells-bench snapshot [MiB]`: a VP with MiB (default 1024) of data in
//! /data: `cellctl snapshot` while it runs (it is paused for the copy) and
//! while stopped, `rollback`, `reset`; a cold move (`export` to a file,
//! `import` into another cellsd, and both through a pipe). Peer:
//! `cp --sparse=always` of the same disk image in the same run (what a
//! plain copy costs here).

use std::time::Instant;

use cells_tests::Cells;

use crate::ms;

pub fn bench(mib: usize) -> i32 {
    let c = Cells::new();
    let disk = format!("{}M", mib * 2 + 256);
    c.ok(&["create", "s", "--template", "minimal", "--disk", &disk]);
    c.ok(&["start", "s"]);
    let t = Instant::now();
    // Incompressible data (a file system may not share or skip it).
    c.sh_ok(
        "s",
        &format!("dd if=/dev/urandom of=/data/blob bs=1M count={mib} 2>/dev/null && sync"),
    );
    println!("wrote {mib} MiB into /data in {:.0} ms", ms(t));
    let time = |args: &[&str]| {
        let t = Instant::now();
        c.ok(args);
        ms(t)
    };
    let running = time(&["snapshot", "s", "hot"]);
    // How long the VP was paused: the copy (cellsd's own measure).
    let list: serde_json::Value =
        serde_json::from_str(&c.ok(&["snapshot", "list", "s", "--json"])).unwrap_or_default();
    let paused = list[0]["took_ms"].as_f64().unwrap_or(0.0);
    c.ok(&["stop", "s"]);
    let stopped = time(&["snapshot", "s", "cold"]);
    let rollback = time(&["rollback", "s", "hot"]);
    let reset = time(&["reset", "s"]);
    // Peer: a plain sparse copy of the image.
    let img = c.state.join("vps/s/snapshots/hot/disk.img");
    let dst = c.root.join("peer.img");
    let t = Instant::now();
    let ok = std::process::Command::new("cp")
        .arg("--sparse=always")
        .arg(&img)
        .arg(&dst)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let sync = std::fs::File::open(&dst).and_then(|f| f.sync_all()).is_ok();
    let cp = ms(t);
    assert!(ok && sync, "cp of the image");
    let _ = std::fs::remove_file(&dst);
    // Cold move: export to a file, import into another cellsd (another id
    // range: the owners are moved), and the same through a pipe.
    c.ok(&["rollback", "s", "hot"]);
    let other = Cells::with_args(None, &["--id-base", "3400000"]);
    other.ok(&["template", "build", "minimal"]);
    let file = c.root.join("s.cellsvp");
    let export = time(&["export", "s", "-o", file.to_str().unwrap_or_default()]);
    let archive = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    let t = Instant::now();
    other.ok(&["import", file.to_str().unwrap_or_default()]);
    let import = ms(t);
    let _ = std::fs::remove_file(&file);
    let t = Instant::now();
    let mut exp = c
        .ctl_cmd()
        .args(["export", "s", "-o", "-"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("export");
    let imp = other
        .ctl_cmd()
        .args(["import", "-", "--name", "piped"])
        .stdin(exp.stdout.take().expect("pipe"))
        .output()
        .expect("import");
    let piped_ok = exp.wait().map(|s| s.success()).unwrap_or(false) && imp.status.success();
    let piped = ms(t);
    assert!(piped_ok, "piped move: {imp:?}");
    drop(other);
    println!("cold move of a VP with {mib} MiB in /data: archive {archive} bytes");
    println!("  export to a file        {export:.0}");
    println!("  import from it          {import:.0}");
    println!("  export | import (pipe)  {piped:.0}");
    println!("snapshot of a VP with {mib} MiB in /data, in ms (one run each)");
    println!("  snapshot while running  {running:.0} (VP paused {paused:.0})");
    println!("  snapshot while stopped  {stopped:.0}");
    println!("  rollback                {rollback:.0}");
    println!("  reset                   {reset:.0}");
    println!("  cp --sparse=always of the image (peer) {cp:.0}");
    println!(
        "ratio: snapshot (stopped) / cp = {:.2}x, rollback / cp = {:.2}x",
        stopped / cp,
        rollback / cp
    );
    let json = serde_json::json!({
        "bench": "snapshot",
        "data_mib": mib,
        "snapshot_running_ms": running,
        "paused_ms": paused,
        "snapshot_stopped_ms": stopped,
        "rollback_ms": rollback,
        "reset_ms": reset,
        "cp_sparse_ms": cp,
        "archive_bytes": archive,
        "export_ms": export,
        "import_ms": import,
        "export_import_pipe_ms": piped,
    });
    println!("{json}");
    0
}
