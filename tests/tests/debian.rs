//! The `debian` template: a Debian 12 system with cells' phone layer. Stock
//! Debian tools read the VP's devices. (The first build fetches the base
//! from Debian's archive with mmdebstrap into cellsd's cache; later builds,
//! and other tests, unpack the cached base.)

use std::time::Duration;

use cells_tests::Cells;

#[test]
fn stock_debian_tools_read_the_vps_devices() {
    let c = Cells::new();
    c.ok(&["template", "build", "debian"]);
    let cache = std::path::Path::new(cellsd::template::DEFAULT_CACHE_DIR);
    let cached: Vec<_> = std::fs::read_dir(cache)
        .expect("the cache")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tar"))
        .map(|e| (e.path(), e.metadata().unwrap().modified().unwrap()))
        .collect();
    assert!(!cached.is_empty(), "the base is cached");
    // A rebuild takes the cached base (not fetched again).
    c.ok(&["template", "build", "debian"]);
    for (p, t) in &cached {
        assert_eq!(std::fs::metadata(p).unwrap().modified().unwrap(), *t);
    }
    c.ok(&["create", "deb", "--template", "debian"]);
    c.ok(&["start", "deb"]);
    let v = c.sh_ok("deb", "cat /etc/debian_version");
    assert!(v.starts_with("12."), "{v}");
    // The phone layer: its log, properties, the VP's devices.
    c.sh_ok("deb", "log -t Debian hello");
    assert!(c
        .sh_ok("deb", "logcat -d -v tag")
        .contains("I/Debian  : hello"));
    assert_eq!(c.sh_ok("deb", "getprop ro.product.model").trim(), "deb");
    // evtest (Debian's) reads the accelerometer's events.
    let ev = c
        .ctl_cmd()
        .args([
            "exec",
            "deb",
            "--",
            "sh",
            "-c",
            "timeout 3 evtest /dev/input/event2 2>&1 | grep -m 4 '^Event:'",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("evtest");
    std::thread::sleep(Duration::from_millis(1500));
    c.ok(&["sensor", "set", "accel", "0", "-9.80665", "0"]);
    let out = ev.wait_with_output().expect("evtest output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("code 1 (ABS_Y), value -1000") && text.contains("SYN_REPORT"),
        "{text}"
    );
    // gpsd (Debian's) reads the GPS receiver; its clients get the position.
    c.ok(&["location", "set", "51.5", "-0.12", "20"]);
    let tpv = c.sh_ok(
        "deb",
        "gpsd -n -N -b /dev/ttyGPS0 2>/dev/null & sleep 1.5; \
         (printf '?WATCH={\"enable\":true,\"json\":true};\\n'; sleep 3) | nc 127.0.0.1 2947 \
         | grep -o '\"class\":\"TPV\".*' | head -1; kill %1",
    );
    assert!(
        tpv.contains("\"lat\":51.5") && tpv.contains("\"lon\":-0.12"),
        "{tpv}"
    );
}
