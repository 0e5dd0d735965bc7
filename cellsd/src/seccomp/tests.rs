use super::*;

/// A classic BPF interpreter over `struct seccomp_data`, enough for the
/// instructions [`compile`] emits.
fn run(f: &Filter, arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&nr.to_le_bytes());
    data[4..8].copy_from_slice(&arch.to_le_bytes());
    for (i, a) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
    }
    let word = |k: u32| {
        let k = k as usize;
        u32::from_le_bytes(data[k..k + 4].try_into().unwrap())
    };
    let (mut pc, mut a) = (0usize, 0u32);
    loop {
        let i = f.0[pc];
        pc += 1;
        match i.code {
            LD_W_ABS => a = word(i.k),
            AND_K => a &= i.k,
            RET_K => return i.k,
            JA => pc += i.k as usize,
            JEQ_K | JGT_K | JGE_K => {
                let t = match i.code {
                    JEQ_K => a == i.k,
                    JGT_K => a > i.k,
                    _ => a >= i.k,
                };
                pc += if t { i.jt } else { i.jf } as usize;
            }
            c => panic!("unexpected opcode {c:#x}"),
        }
    }
}

fn nr(table: &[(&str, u32)], name: &str) -> u32 {
    table.iter().find(|(n, _)| *n == name).unwrap().1
}

/// The architecture the filter is compiled for (this build's) and its table.
#[cfg(target_arch = "aarch64")]
const NATIVE: (u32, &[(&str, u32)]) = (AUDIT_ARCH_AARCH64, tables::AARCH64);
#[cfg(not(target_arch = "aarch64"))]
const NATIVE: (u32, &[(&str, u32)]) = (AUDIT_ARCH_X86_64, tables::X86_64);

const ALLOW: u32 = 0x7fff_0000;
const ERR_EPERM: u32 = 0x0005_0000 | libc::EPERM as u32;
const ERR_ENOSYS: u32 = 0x0005_0000 | libc::ENOSYS as u32;

#[test]
fn the_default_profile_denies_what_it_lists_and_allows_the_rest() {
    let f = compile(&default_profile()).unwrap();
    let x = |name: &str, args| run(&f, NATIVE.0, nr(NATIVE.1, name), args);
    for d in [
        "keyctl",
        "add_key",
        "bpf",
        "perf_event_open",
        "userfaultfd",
        "io_uring_setup",
        "kexec_load",
        "open_by_handle_at",
        "init_module",
        "finit_module",
        "reboot",
        "syslog",
    ] {
        assert_eq!(x(d, [0; 6]), ERR_EPERM, "{d}");
    }
    for ok in [
        "read",
        "write",
        "openat",
        "mount",
        "umount2",
        "setns",
        "pivot_root",
        "ptrace",
        "execve",
    ] {
        assert_eq!(x(ok, [0; 6]), ALLOW, "{ok}");
    }
    // New user namespaces only.
    let newuser = CLONE_NEWUSER | libc::CLONE_NEWNS as u64;
    assert_eq!(x("unshare", [newuser, 0, 0, 0, 0, 0]), ERR_EPERM);
    assert_eq!(
        x("unshare", [libc::CLONE_NEWNS as u64, 0, 0, 0, 0, 0]),
        ALLOW
    );
    assert_eq!(
        x("clone", [newuser | 0x1_0000_0000, 0, 0, 0, 0, 0]),
        ERR_EPERM
    );
    assert_eq!(x("clone", [libc::SIGCHLD as u64, 0, 0, 0, 0, 0]), ALLOW);
    assert_eq!(x("clone3", [0; 6]), ERR_ENOSYS);
    // personality: only docker's values; the high word counts too.
    assert_eq!(x("personality", [0xffff_ffff, 0, 0, 0, 0, 0]), ALLOW);
    assert_eq!(x("personality", [0x8, 0, 0, 0, 0, 0]), ALLOW);
    assert_eq!(x("personality", [0x0040000, 0, 0, 0, 0, 0]), ERR_EPERM);
    assert_eq!(x("personality", [0x1_0000_0008, 0, 0, 0, 0, 0]), ERR_EPERM);
    // On x86_64 the i386 ABI is filtered by its own numbers; x32 and
    // others get ENOSYS.
    if cfg!(target_arch = "x86_64") {
        let i = |name: &str| run(&f, AUDIT_ARCH_I386, nr(tables::I386, name), [0; 6]);
        assert_eq!(i("keyctl"), ERR_EPERM);
        assert_eq!(i("stime"), ERR_EPERM);
        assert_eq!(i("read"), ALLOW);
        assert_eq!(
            run(&f, AUDIT_ARCH_X86_64, X32_BIT | 250, [0; 6]),
            ERR_ENOSYS
        );
    }
    assert_eq!(run(&f, 0x4000_0028, 0, [0; 6]), ERR_ENOSYS, "arm (32-bit)");
}

#[test]
fn docker_profiles_parse_with_caps_and_every_comparison() {
    let json: Value = serde_json::from_str(
        r#"{
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
        "syscalls": [
          {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
          {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
          {"names": ["umount2"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_BOOT"]}},
          {"names": ["setns"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
          {"names": ["lseek"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 2, "value": 2, "op": "SCMP_CMP_LE"}]},
          {"names": ["dup"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 4294967296, "op": "SCMP_CMP_GE"}]},
          {"names": ["dup3"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 5, "op": "SCMP_CMP_GT"}, {"index": 1, "value": 9, "op": "SCMP_CMP_LT"}]},
          {"names": ["close"], "action": "SCMP_ACT_ERRNO", "errnoRet": 9, "args": [{"index": 0, "value": 7, "op": "SCMP_CMP_NE"}]},
          {"names": ["close"], "action": "SCMP_ACT_ALLOW"},
          {"names": ["no_such_call_here"], "action": "SCMP_ACT_ALLOW"}
        ]}"#,
    )
    .unwrap();
    let caps = vec!["CAP_SYS_ADMIN".to_string()];
    let f = compile(&parse_profile(&json, &caps).unwrap()).unwrap();
    let x = |name: &str, args| run(&f, NATIVE.0, nr(NATIVE.1, name), args);
    let enosys = 0x0005_0000 | 38;
    assert_eq!(x("read", [0; 6]), ALLOW);
    assert_eq!(x("openat", [0; 6]), enosys, "the default");
    assert_eq!(x("mount", [0; 6]), ALLOW, "the VP has CAP_SYS_ADMIN");
    assert_eq!(x("umount2", [0; 6]), enosys, "the VP lacks CAP_SYS_BOOT");
    assert_eq!(x("setns", [0; 6]), enosys, "excluded for CAP_SYS_ADMIN");
    assert_eq!(x("lseek", [0, 0, 2, 0, 0, 0]), ALLOW);
    assert_eq!(x("lseek", [0, 0, 3, 0, 0, 0]), enosys);
    assert_eq!(
        x("lseek", [0, 0, 1 << 32, 0, 0, 0]),
        enosys,
        "LE looks at the high word"
    );
    assert_eq!(x("dup", [1 << 32, 0, 0, 0, 0, 0]), ALLOW);
    assert_eq!(x("dup", [0xffff_ffff, 0, 0, 0, 0, 0]), enosys);
    assert_eq!(x("dup3", [6, 8, 0, 0, 0, 0]), ALLOW);
    assert_eq!(x("dup3", [5, 8, 0, 0, 0, 0]), enosys);
    assert_eq!(x("dup3", [6, 9, 0, 0, 0, 0]), enosys);
    assert_eq!(x("close", [3, 0, 0, 0, 0, 0]), 0x0005_0000 | 9);
    assert_eq!(
        x("close", [7, 0, 0, 0, 0, 0]),
        ALLOW,
        "NE fails, the next rule allows"
    );
    assert_eq!(x("close", [7 | 1 << 32, 0, 0, 0, 0, 0]), 0x0005_0000 | 9);

    for (bad, want) in [
        (r#"[]"#, "not a JSON object"),
        (
            r#"{"defaultAction": "SCMP_ACT_NOTIFY"}"#,
            "SCMP_ACT_NOTIFY is not supported",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"action": "SCMP_ACT_ALLOW"}]}"#,
            "syscalls[0]: no names",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 9, "op": "SCMP_CMP_EQ"}]}]}"#,
            "index must be 0 to 5",
        ),
    ] {
        let v: Value = serde_json::from_str(bad).unwrap();
        let e = parse_profile(&v, &caps).unwrap_err().to_string();
        assert!(e.contains(want), "{bad}: {e}");
    }
}
