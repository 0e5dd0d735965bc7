//! The VP's seccomp filter: a classic BPF program installed by the VP's
//! init and by every exec'd command just before they exec, inherited by
//! everything the VP runs.
//!
//! Three choices per VP (`cellctl create --seccomp default|off|FILE`):
//! - `default` ([`default_profile`]): every system call is allowed except
//!   those no phone persona needs and that reach kernel state shared with
//!   the host or other VPs, as in docker's default profile: the key
//!   management calls (`add_key`, `keyctl`, `request_key`), `bpf`,
//!   `perf_event_open`, `userfaultfd`, `io_uring_*`, `kexec_*`, module
//!   loading, `open_by_handle_at`, `reboot`, swap, quotas, accounting, the
//!   clock setters, `syslog`, `iopl`/`ioperm`, `fanotify_init` and a few
//!   obsolete ones; new user namespaces (`clone`/`unshare` with
//!   CLONE_NEWUSER; `clone3`, whose flags a filter cannot read, answers
//!   ENOSYS so that C libraries fall back to `clone`); `personality` only
//!   with docker's allowed values. Mounting in the VP's own namespaces
//!   (what Android's init does) stays allowed: the mounts cells makes are
//!   locked, and the kernel's own checks apply.
//! - `off`: no filter.
//! - FILE: a profile in docker's (and the OCI runtime spec's) JSON format:
//!   `defaultAction`, `defaultErrnoRet`, `syscalls[]` with `names`,
//!   `action`, `errnoRet`, `args` (`index`, `value`, `valueTwo`, `op`) and
//!   docker's `includes`/`excludes` on `caps` and `arches`. Actions
//!   SCMP_ACT_ALLOW, _ERRNO, _KILL (_KILL_THREAD), _KILL_PROCESS, _TRAP and
//!   _LOG. Names this kernel's tables do not know are skipped.
//!
//! The filter checks the architecture first: x86_64's own calls, the i386
//! ABI (which an x86_64 kernel also runs; same rules by name) and on arm64
//! its own table; the x32 ABI and any other architecture get ENOSYS.

mod tables;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a rule (or the default) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    Allow,
    Errno(u16),
    KillThread,
    KillProcess,
    Trap,
    Log,
}

impl Action {
    fn ret(self) -> u32 {
        const RET_KILL_PROCESS: u32 = 0x8000_0000;
        const RET_KILL_THREAD: u32 = 0;
        const RET_TRAP: u32 = 0x0003_0000;
        const RET_ERRNO: u32 = 0x0005_0000;
        const RET_LOG: u32 = 0x7ffc_0000;
        const RET_ALLOW: u32 = 0x7fff_0000;
        match self {
            Action::Allow => RET_ALLOW,
            Action::Errno(e) => RET_ERRNO | e as u32,
            Action::KillThread => RET_KILL_THREAD,
            Action::KillProcess => RET_KILL_PROCESS,
            Action::Trap => RET_TRAP,
            Action::Log => RET_LOG,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Ne,
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
    /// (arg & value) == value_two
    MaskedEq,
}

/// One comparison of a system call argument (all of a rule's must hold).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArgCmp {
    pub index: u8,
    pub op: Op,
    pub value: u64,
    pub value_two: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub names: Vec<String>,
    pub action: Action,
    pub args: Vec<ArgCmp>,
}

/// A seccomp profile: rules in order (the first that matches decides),
/// then the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub default: Action,
    pub rules: Vec<Rule>,
}

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp profile: {0}; see docs/SECURITY.md for the format (docker's)")]
    Profile(String),
    #[error("installing the seccomp filter: {0}")]
    Install(#[source] std::io::Error),
}

const CLONE_NEWUSER: u64 = 0x1000_0000;
const EPERM: u16 = libc::EPERM as u16;
const ENOSYS: u16 = libc::ENOSYS as u16;

/// System calls the default profile refuses with EPERM.
pub const DENIED: &[&str] = &[
    "acct",
    "add_key",
    "afs_syscall",
    "bpf",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_settime",
    "clock_settime64",
    "create_module",
    "delete_module",
    "fanotify_init",
    "finit_module",
    "get_kernel_syms",
    "getpmsg",
    "init_module",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ioperm",
    "iopl",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "nfsservctl",
    "open_by_handle_at",
    "perf_event_open",
    "putpmsg",
    "query_module",
    "quotactl",
    "quotactl_fd",
    "reboot",
    "request_key",
    "security",
    "settimeofday",
    "stime",
    "swapoff",
    "swapon",
    "_sysctl",
    "sysfs",
    "syslog",
    "tuxcall",
    "uselib",
    "userfaultfd",
    "ustat",
    "vhangup",
    "vm86",
    "vm86old",
    "vserver",
];

/// The profile VPs get unless created with `--seccomp off` or a FILE.
pub fn default_profile() -> Profile {
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut rules = vec![Rule {
        names: names(DENIED),
        action: Action::Errno(EPERM),
        args: Vec::new(),
    }];
    // No new user namespaces: clone/unshare with CLONE_NEWUSER.
    for call in ["clone", "unshare"] {
        rules.push(Rule {
            names: names(&[call]),
            action: Action::Errno(EPERM),
            args: vec![ArgCmp {
                index: 0,
                op: Op::MaskedEq,
                value: CLONE_NEWUSER,
                value_two: CLONE_NEWUSER,
            }],
        });
    }
    rules.push(Rule {
        names: names(&["clone3"]),
        action: Action::Errno(ENOSYS),
        args: Vec::new(),
    });
    // personality: docker's values (Linux, PER_LINUX32, UNAME26 and their
    // combination, and the query 0xffffffff); nothing else.
    for v in [0u64, 0x8, 0x20000, 0x20008, 0xffff_ffff] {
        rules.push(Rule {
            names: names(&["personality"]),
            action: Action::Allow,
            args: vec![ArgCmp {
                index: 0,
                op: Op::Eq,
                value: v,
                value_two: 0,
            }],
        });
    }
    rules.push(Rule {
        names: names(&["personality"]),
        action: Action::Errno(EPERM),
        args: Vec::new(),
    });
    Profile {
        default: Action::Allow,
        rules,
    }
}

fn parse_action(v: Option<&Value>, errno: Option<&Value>) -> Result<Action, SeccompError> {
    let name = v
        .and_then(Value::as_str)
        .ok_or_else(|| SeccompError::Profile("an action is missing or not a string".into()))?;
    let errno = errno
        .and_then(Value::as_u64)
        .map(|e| e.min(4095) as u16)
        .unwrap_or(EPERM);
    Ok(match name {
        "SCMP_ACT_ALLOW" => Action::Allow,
        "SCMP_ACT_ERRNO" => Action::Errno(errno),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => Action::KillThread,
        "SCMP_ACT_KILL_PROCESS" => Action::KillProcess,
        "SCMP_ACT_TRAP" => Action::Trap,
        "SCMP_ACT_LOG" => Action::Log,
        other => {
            return Err(SeccompError::Profile(format!(
                "action {other} is not supported (use SCMP_ACT_ALLOW, _ERRNO, _KILL, _KILL_PROCESS, _TRAP or _LOG)"
            )))
        }
    })
}

fn parse_op(s: &str) -> Result<Op, SeccompError> {
    Ok(match s {
        "SCMP_CMP_NE" => Op::Ne,
        "SCMP_CMP_LT" => Op::Lt,
        "SCMP_CMP_LE" => Op::Le,
        "SCMP_CMP_EQ" => Op::Eq,
        "SCMP_CMP_GE" => Op::Ge,
        "SCMP_CMP_GT" => Op::Gt,
        "SCMP_CMP_MASKED_EQ" => Op::MaskedEq,
        other => return Err(SeccompError::Profile(format!("unknown comparison {other}"))),
    })
}

/// docker's name for this build's architecture (in `includes.arches`).
fn native_arch_names() -> &'static [&'static str] {
    if cfg!(target_arch = "aarch64") {
        &["arm64", "aarch64"]
    } else {
        &["amd64", "x86_64", "x86"]
    }
}

/// Does a docker `includes`/`excludes` condition hold for a VP with these
/// capabilities (names like "CAP_SYS_ADMIN")?
fn condition(cond: Option<&Value>, caps: &[String], all: bool) -> bool {
    let Some(c) = cond.and_then(Value::as_object) else {
        return all;
    };
    let list = |k: &str| -> Vec<String> {
        c.get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    };
    let has_caps = list("caps");
    let arches = list("arches");
    if all {
        has_caps.iter().all(|x| caps.contains(x))
            && (arches.is_empty()
                || arches
                    .iter()
                    .any(|a| native_arch_names().contains(&a.as_str())))
    } else {
        has_caps.iter().any(|x| caps.contains(x))
            || arches
                .iter()
                .any(|a| native_arch_names().contains(&a.as_str()))
    }
}

/// Read a profile in docker's JSON format for a VP whose bounding set is
/// `caps` (docker's `includes: {caps}` entries apply when the VP has them).
pub fn parse_profile(json: &Value, caps: &[String]) -> Result<Profile, SeccompError> {
    let obj = json
        .as_object()
        .ok_or_else(|| SeccompError::Profile("not a JSON object".into()))?;
    let default = parse_action(obj.get("defaultAction"), obj.get("defaultErrnoRet"))?;
    let mut rules = Vec::new();
    for (i, s) in obj
        .get("syscalls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let bad = |m: &str| SeccompError::Profile(format!("syscalls[{i}]: {m}"));
        if !condition(s.get("includes"), caps, true) || condition(s.get("excludes"), caps, false) {
            continue;
        }
        let mut names: Vec<String> = s
            .get("names")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        if let Some(n) = s.get("name").and_then(Value::as_str) {
            names.push(n.to_string());
        }
        if names.is_empty() {
            return Err(bad("no names"));
        }
        let action = parse_action(s.get("action"), s.get("errnoRet"))?;
        let mut args = Vec::new();
        for a in s
            .get("args")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = a
                .get("index")
                .and_then(Value::as_u64)
                .ok_or_else(|| bad("an arg has no index"))?;
            if index > 5 {
                return Err(bad("arg index must be 0 to 5"));
            }
            let op = parse_op(
                a.get("op")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("an arg has no op"))?,
            )?;
            args.push(ArgCmp {
                index: index as u8,
                op,
                value: a.get("value").and_then(Value::as_u64).unwrap_or(0),
                value_two: a.get("valueTwo").and_then(Value::as_u64).unwrap_or(0),
            });
        }
        rules.push(Rule {
            names,
            action,
            args,
        });
    }
    Ok(Profile { default, rules })
}

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// A compiled filter, ready to install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter(pub Vec<Insn>);

const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const JGT_K: u16 = 0x25;
const AND_K: u16 = 0x54;
const RET_K: u16 = 0x06;
const JA: u16 = 0x05;

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;
const X32_BIT: u32 = 0x4000_0000;

/// An instruction whose jump targets are labels resolved at the end.
#[derive(Clone, Copy)]
enum J {
    Next,
    Fail,
    Match,
}

struct Body {
    insns: Vec<(Insn, J, J)>,
}

impl Body {
    fn op(&mut self, code: u16, k: u32) {
        self.insns.push((
            Insn {
                code,
                jt: 0,
                jf: 0,
                k,
            },
            J::Next,
            J::Next,
        ));
    }
    fn jump(&mut self, code: u16, k: u32, t: J, f: J) {
        self.insns.push((
            Insn {
                code,
                jt: 0,
                jf: 0,
                k,
            },
            t,
            f,
        ));
    }
}

fn arg_lo(i: u8) -> u32 {
    16 + 8 * i as u32
}

fn arg_hi(i: u8) -> u32 {
    arg_lo(i) + 4
}

/// The checks of one comparison: falls through (J::Next past its end) when
/// it holds, jumps to J::Fail otherwise.
fn compare(b: &mut Body, c: &ArgCmp) {
    let (hi, lo) = ((c.value >> 32) as u32, c.value as u32);
    match c.op {
        Op::Eq | Op::MaskedEq | Op::Ne => {
            let (mhi, mlo, ehi, elo) = if c.op == Op::MaskedEq {
                (hi, lo, (c.value_two >> 32) as u32, c.value_two as u32)
            } else {
                (u32::MAX, u32::MAX, hi, lo)
            };
            // Ne: equal halves mean "fails"; Eq: any unequal half fails.
            let ne = c.op == Op::Ne;
            b.op(LD_W_ABS, arg_hi(c.index));
            if c.op == Op::MaskedEq {
                b.op(AND_K, mhi);
            }
            if ne {
                b.jump(JEQ_K, ehi, J::Next, J::Match);
            } else {
                b.jump(JEQ_K, ehi, J::Next, J::Fail);
            }
            b.op(LD_W_ABS, arg_lo(c.index));
            if c.op == Op::MaskedEq {
                b.op(AND_K, mlo);
            }
            if ne {
                b.jump(JEQ_K, elo, J::Fail, J::Match);
            } else {
                b.jump(JEQ_K, elo, J::Next, J::Fail);
            }
        }
        Op::Gt | Op::Ge | Op::Lt | Op::Le => {
            // hi > vhi: GT/GE hold, LT/LE fail; hi == vhi: compare lo.
            let greater = matches!(c.op, Op::Gt | Op::Ge);
            b.op(LD_W_ABS, arg_hi(c.index));
            if greater {
                b.jump(JGT_K, hi, J::Match, J::Next);
                b.jump(JEQ_K, hi, J::Next, J::Fail);
            } else {
                b.jump(JGT_K, hi, J::Fail, J::Next);
                b.jump(JEQ_K, hi, J::Next, J::Match);
            }
            b.op(LD_W_ABS, arg_lo(c.index));
            match c.op {
                Op::Gt => b.jump(JGT_K, lo, J::Next, J::Fail),
                Op::Ge => b.jump(JGE_K, lo, J::Next, J::Fail),
                Op::Lt => b.jump(JGE_K, lo, J::Fail, J::Next),
                _ => b.jump(JGT_K, lo, J::Fail, J::Next),
            }
        }
    }
}

/// Instructions for one system call number of one rule:
///
/// ```text
/// 0      jeq NR ? next : END          (A holds the number)
/// 1..    the comparisons, one block each: a block that holds goes on to
///        the next block, one that fails jumps to FAIL
/// RET    ret ACTION
/// FAIL   ld nr                        (the comparisons loaded arguments)
/// END    (the next rule)
/// ```
fn rule_insns(nr: u32, rule: &Rule) -> Result<Vec<Insn>, SeccompError> {
    let mut blocks: Vec<Body> = Vec::new();
    for c in &rule.args {
        let mut b = Body { insns: Vec::new() };
        compare(&mut b, c);
        blocks.push(b);
    }
    let total: usize = blocks.iter().map(|b| b.insns.len()).sum();
    let ret = 1 + total;
    let fail = ret + 1;
    let end = if blocks.is_empty() { ret + 1 } else { ret + 2 };
    let off = |from: usize, to: usize| -> Result<u8, SeccompError> {
        u8::try_from(to - from - 1)
            .map_err(|_| SeccompError::Profile("a rule is too long for a BPF jump".into()))
    };
    let mut out = vec![Insn {
        code: JEQ_K,
        jt: 0,
        jf: off(0, end)?,
        k: nr,
    }];
    let mut pos = 1;
    for b in &blocks {
        let block_end = pos + b.insns.len();
        for (i, (insn, t, f)) in b.insns.iter().enumerate() {
            let here = pos + i;
            let target = |j: J| match j {
                J::Next => here + 1,
                J::Match => block_end,
                J::Fail => fail,
            };
            let mut insn = *insn;
            if matches!(insn.code, JEQ_K | JGT_K | JGE_K) {
                insn.jt = off(here, target(*t))?;
                insn.jf = off(here, target(*f))?;
            }
            out.push(insn);
        }
        pos = block_end;
    }
    out.push(Insn {
        code: RET_K,
        jt: 0,
        jf: 0,
        k: rule.action.ret(),
    });
    if !blocks.is_empty() {
        out.push(Insn {
            code: LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0,
        });
    }
    Ok(out)
}

fn table_for(arch: u32) -> &'static [(&'static str, u32)] {
    match arch {
        AUDIT_ARCH_X86_64 => tables::X86_64,
        AUDIT_ARCH_I386 => tables::I386,
        _ => tables::AARCH64,
    }
}

fn section(profile: &Profile, arch: u32) -> Result<Vec<Insn>, SeccompError> {
    let table = table_for(arch);
    let mut out = vec![Insn {
        code: LD_W_ABS,
        jt: 0,
        jf: 0,
        k: 0,
    }];
    if arch == AUDIT_ARCH_X86_64 {
        // The x32 ABI: numbers with bit 30 set.
        out.push(Insn {
            code: JGE_K,
            jt: 0,
            jf: 1,
            k: X32_BIT,
        });
        out.push(Insn {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: Action::Errno(ENOSYS).ret(),
        });
    }
    for rule in &profile.rules {
        for name in &rule.names {
            let Some((_, nr)) = table.iter().find(|(n, _)| n == name) else {
                continue;
            };
            out.extend(rule_insns(*nr, rule)?);
        }
    }
    out.push(Insn {
        code: RET_K,
        jt: 0,
        jf: 0,
        k: profile.default.ret(),
    });
    Ok(out)
}

/// Compile a profile for this build's architecture (and, on x86_64, the
/// i386 ABI).
pub fn compile(profile: &Profile) -> Result<Filter, SeccompError> {
    let native = if cfg!(target_arch = "aarch64") {
        AUDIT_ARCH_AARCH64
    } else {
        AUDIT_ARCH_X86_64
    };
    let main = section(profile, native)?;
    let compat = if native == AUDIT_ARCH_X86_64 {
        Some(section(profile, AUDIT_ARCH_I386)?)
    } else {
        None
    };
    let deny = Insn {
        code: RET_K,
        jt: 0,
        jf: 0,
        k: Action::Errno(ENOSYS).ret(),
    };
    let ld_arch = Insn {
        code: LD_W_ABS,
        jt: 0,
        jf: 0,
        k: 4,
    };
    let out = match compat {
        // [0] ld arch [1] jeq native -> MAIN [2] jeq i386 ? [3] : [4]
        // [3] ja COMPAT [4] ret ENOSYS [5] MAIN ... COMPAT ...
        Some(c) => {
            let mut out = vec![
                ld_arch,
                Insn {
                    code: JEQ_K,
                    jt: 3,
                    jf: 0,
                    k: native,
                },
                Insn {
                    code: JEQ_K,
                    jt: 0,
                    jf: 1,
                    k: AUDIT_ARCH_I386,
                },
                Insn {
                    code: JA,
                    jt: 0,
                    jf: 0,
                    k: main.len() as u32 + 1,
                },
                deny,
            ];
            out.extend(main);
            out.extend(c);
            out
        }
        // [0] ld arch [1] jeq native ? MAIN : [2] [2] ret ENOSYS [3] MAIN
        None => {
            let mut out = vec![
                ld_arch,
                Insn {
                    code: JEQ_K,
                    jt: 1,
                    jf: 0,
                    k: native,
                },
                deny,
            ];
            out.extend(main);
            out
        }
    };
    finish(out)
}

fn finish(v: Vec<Insn>) -> Result<Filter, SeccompError> {
    if v.len() > 4096 {
        return Err(SeccompError::Profile(format!(
            "the filter has {} instructions, more than the kernel's 4096",
            v.len()
        )));
    }
    Ok(Filter(v))
}

/// Install `filter` on the calling thread (inherited by its children and
/// across exec). Needs no_new_privs or CAP_SYS_ADMIN in the current user
/// namespace (VP root has it).
pub fn install(filter: &Filter) -> Result<(), SeccompError> {
    let prog: Vec<libc::sock_filter> = filter
        .0
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: fprog points at prog, which outlives the call; the kernel copies it.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &fprog as *const libc::sock_fprog,
            0,
            0,
        )
    };
    if r != 0 {
        return Err(SeccompError::Install(std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
