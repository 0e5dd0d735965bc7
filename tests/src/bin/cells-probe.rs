//! cells-probe: the escape suite's tool inside a VP (tests/tests/security.rs
//! copies it into the VP's /data). Each subcommand tries one thing a hostile
//! VP root would try and prints what the kernel answered, one result per
//! line, so the test decides what must have been denied.
//!
//! ```text
//! cells-probe inotify-hold          take inotify instances until refused, print "held N", wait for stdin EOF
//! cells-probe keyring [DESC]        print "session SERIAL" and whether a "user" key DESC is possessed
//! cells-probe uid-scan SECS         for SECS seconds, print every process whose uid is not mapped here
//! cells-probe syscalls              try the calls a seccomp filter should stop: "NAME ok" or "NAME errno N"
//! cells-probe udp-listen PORT SECS  print "from IP MSG" for each UDP datagram to PORT within SECS
//! cells-probe udp-raw SRC DST PORT MSG                 a UDP datagram with any IP source (raw socket)
//! cells-probe frame-udp SMAC DMAC SRC DST PORT MSG     the same as a whole Ethernet frame on eth0
//! cells-probe arp-request SMAC SIP TIP                 "who has TIP, tell SIP at SMAC", broadcast on eth0
//! cells-probe evdev-info DEV        evdev ioctls: "name N", "version V", "key K" for KEY_POWER, "abs A MIN MAX"
//! cells-probe evdev-read DEV N MS   poll, then print up to N events "TYPE CODE VALUE" within MS
//! cells-probe evdev-write DEV T:C:V...  write events to DEV (as sendevent does)
//! cells-probe mmap DEV LEN          map LEN bytes of DEV shared, write them: "ok" or "errno N"
//! cells-probe uinput-keys CODE...   (on a host) a uinput keyboard that presses CODE... together, then releases
//! cells-probe unix-listen NAME SECS an abstract unix socket @NAME, answering "hello" for SECS
//! cells-probe unix-connect NAME     connect to @NAME: "got MSG" or "errno N"
//! cells-probe shm-create KEY        a SysV shared memory segment with KEY, kept; prints its id
//! cells-probe shm-get KEY           "found ID" or "errno N"
//! ```

use std::io::{BufRead, Write};

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn inotify_hold() -> i32 {
    let mut held = Vec::new();
    loop {
        // SAFETY: inotify_init1 with a flag; the fd is kept until exit.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        if fd < 0 {
            break;
        }
        held.push(fd);
        if held.len() >= 100_000 {
            break;
        }
    }
    println!("held {} (refused with errno {})", held.len(), errno());
    let _ = std::io::stdout().flush();
    // Hold them until the test is done.
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    0
}

fn keyring(desc: Option<&str>) -> i32 {
    const KEYCTL_GET_KEYRING_ID: libc::c_long = 0;
    const KEY_SPEC_SESSION_KEYRING: libc::c_long = -3;
    // SAFETY: keyctl with integer arguments.
    let id = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_GET_KEYRING_ID,
            KEY_SPEC_SESSION_KEYRING,
            0,
        )
    };
    if id < 0 {
        println!("session error {}", errno());
    } else {
        println!("session {id}");
    }
    if let Some(d) = desc {
        let c = std::ffi::CString::new(d).unwrap_or_default();
        // SAFETY: request_key only looks up (no callout info given).
        let k = unsafe {
            libc::syscall(
                libc::SYS_request_key,
                c"user".as_ptr(),
                c.as_ptr(),
                std::ptr::null::<libc::c_char>(),
                0,
            )
        };
        if k < 0 {
            println!("key {d} error {}", errno());
        } else {
            println!("key {d} found {k}");
        }
    }
    0
}

/// Processes whose real or effective uid has no mapping in this user
/// namespace show as the overflow uid (65534): a host-credentialed process
/// inside the VP.
fn uid_scan(secs: u64) -> i32 {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let me = std::process::id().to_string();
    let mut scans = 0u64;
    while std::time::Instant::now() < end {
        scans += 1;
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if !name.bytes().all(|b| b.is_ascii_digit()) || name == me {
                continue;
            }
            let Ok(st) = std::fs::read_to_string(format!("/proc/{name}/status")) else {
                continue;
            };
            let uid = st.lines().find(|l| l.starts_with("Uid:")).unwrap_or("");
            if uid.split_whitespace().skip(1).any(|u| u == "65534") {
                let cmd = st.lines().next().unwrap_or("");
                println!("unmapped pid {name} {cmd} {uid}");
            }
        }
    }
    println!("scans {scans}");
    0
}

/// The result of one attempt: Ok, or the errno.
fn attempt(rc: libc::c_long) -> Result<libc::c_long, i32> {
    if rc < 0 {
        Err(errno())
    } else {
        Ok(rc)
    }
}

/// Run `f` in a child (for calls that change the caller, like unshare);
/// the child's exit code 0 means the call succeeded, else it is the errno.
fn in_child(f: impl FnOnce() -> libc::c_long) -> Result<libc::c_long, i32> {
    // SAFETY: the child only makes the call and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let r = f();
        let code = if r < 0 { errno() } else { 0 };
        // SAFETY: _exit is always safe.
        unsafe { libc::_exit(code) };
    }
    let mut st = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    match libc::WEXITSTATUS(st) {
        0 => Ok(0),
        e => Err(e),
    }
}

/// keyctl(KEYCTL_GET_KEYRING_ID, @s) through the i386 system call ABI.
#[cfg(target_arch = "x86_64")]
fn keyctl_i386() -> libc::c_long {
    let mut ret: i64 = 288; // __NR_keyctl on i386
                            // SAFETY: int 0x80 with the i386 ABI: eax = number, ebx/ecx/edx args.
    unsafe {
        std::arch::asm!(
            "xchg {b}, rbx",
            "int 0x80",
            "xchg {b}, rbx",
            b = inout(reg) 0i64 => _,
            inout("rax") ret,
            in("rcx") -3i64,
            in("rdx") 0i64,
        );
    }
    // The 32-bit return value in eax.
    ret as i32 as libc::c_long
}

fn syscalls() -> i32 {
    let null = std::ptr::null::<libc::c_void>();
    // SAFETY (all below): raw system calls with arguments that touch no
    // memory of ours beyond the constant strings and zeroed structs given.
    let results: Vec<(&str, Result<libc::c_long, i32>)> = vec![
        (
            "keyctl",
            // SAFETY: a raw system call; its arguments touch no memory of ours beyond
            // constant strings and zeroed structs that outlive it.
            attempt(unsafe { libc::syscall(libc::SYS_keyctl, 0, -3i64, 0) }),
        ),
        (
            "add_key",
            // SAFETY: a raw system call; its arguments touch no memory of ours beyond
            // constant strings and zeroed structs that outlive it.
            attempt(unsafe {
                libc::syscall(
                    libc::SYS_add_key,
                    c"user".as_ptr(),
                    c"probe".as_ptr(),
                    c"v".as_ptr(),
                    1usize,
                    -3i64,
                )
            }),
        ),
        (
            "request_key",
            // SAFETY: a raw system call; its arguments touch no memory of ours beyond
            // constant strings and zeroed structs that outlive it.
            attempt(unsafe {
                libc::syscall(
                    libc::SYS_request_key,
                    c"user".as_ptr(),
                    c"probe".as_ptr(),
                    null,
                    0,
                )
            }),
        ),
        (
            "io_uring_setup",
            // SAFETY: a raw system call; its arguments touch no memory of ours beyond
            // constant strings and zeroed structs that outlive it.
            attempt(unsafe {
                let mut params = [0u8; 120];
                libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr())
            }),
        ),
        // UFFD_USER_MODE_ONLY: allowed to unprivileged users by the kernel.
        (
            "userfaultfd",
            // SAFETY: a raw system call; its arguments touch no memory of ours beyond
            // constant strings and zeroed structs that outlive it.
            attempt(unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | 1) }),
        ),
        (
            "perf_event_open",
            // SAFETY: a raw system call; its arguments touch no memory of ours beyond
            // constant strings and zeroed structs that outlive it.
            attempt(unsafe {
                // PERF_TYPE_SOFTWARE, PERF_COUNT_SW_CPU_CLOCK, this process,
                // user space only (exclude_kernel | exclude_hv).
                let mut attr = [0u8; 128];
                attr[4..8].copy_from_slice(&128u32.to_le_bytes());
                attr[0..4].copy_from_slice(&1u32.to_le_bytes());
                attr[40] = 0b0110_0000;
                libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), 0, -1, -1, 0)
            }),
        ),
        (
            "unshare_newuser",
            // SAFETY: a raw system call; its arguments touch no memory of ours beyond
            // constant strings and zeroed structs that outlive it.
            in_child(|| unsafe { libc::unshare(libc::CLONE_NEWUSER) } as libc::c_long),
        ),
        (
            "clone3",
            // SAFETY: a raw system call; its arguments touch no memory of ours beyond
            // constant strings and zeroed structs that outlive it.
            in_child(|| unsafe {
                let mut args = [0u64; 11];
                args[4] = libc::SIGCHLD as u64;
                let r = libc::syscall(libc::SYS_clone3, args.as_mut_ptr(), 88usize);
                if r == 0 {
                    libc::_exit(0);
                }
                if r > 0 {
                    libc::waitpid(r as i32, std::ptr::null_mut(), 0);
                    0
                } else {
                    r
                }
            }),
        ),
        (
            "personality",
            // SAFETY: a raw system call; its arguments touch no memory of ours beyond
            // constant strings and zeroed structs that outlive it.
            in_child(|| unsafe { libc::personality(0x0040000) } as libc::c_long),
        ),
        (
            "bpf",
            // SAFETY: a raw system call; its arguments touch no memory of ours beyond
            // constant strings and zeroed structs that outlive it.
            attempt(unsafe { libc::syscall(libc::SYS_bpf, 5, null, 0) }),
        ),
        (
            "kexec_load",
            // SAFETY: a raw system call; its arguments touch no memory of ours beyond
            // constant strings and zeroed structs that outlive it.
            attempt(unsafe { libc::syscall(libc::SYS_kexec_load, 0, 0, null, 0) }),
        ),
        (
            "init_module",
            // SAFETY: a raw system call; its arguments touch no memory of ours beyond
            // constant strings and zeroed structs that outlive it.
            attempt(unsafe { libc::syscall(libc::SYS_init_module, null, 0, c"".as_ptr()) }),
        ),
        (
            "finit_module",
            // SAFETY: a raw system call; its arguments touch no memory of ours beyond
            // constant strings and zeroed structs that outlive it.
            attempt(unsafe { libc::syscall(libc::SYS_finit_module, -1, c"".as_ptr(), 0) }),
        ),
        (
            "delete_module",
            // SAFETY: a raw system call; its arguments touch no memory of ours beyond
            // constant strings and zeroed structs that outlive it.
            attempt(unsafe { libc::syscall(libc::SYS_delete_module, c"probe".as_ptr(), 0) }),
        ),
        (
            "open_by_handle_at",
            // SAFETY: a raw system call; its arguments touch no memory of ours beyond
            // constant strings and zeroed structs that outlive it.
            attempt(unsafe { libc::syscall(libc::SYS_open_by_handle_at, -1, null, 0) }),
        ),
        (
            "reboot",
            // SAFETY: a raw system call; its arguments touch no memory of ours beyond
            // constant strings and zeroed structs that outlive it.
            attempt(unsafe { libc::syscall(libc::SYS_reboot, 0, 0, 0, null) }),
        ),
        (
            "syslog",
            // SAFETY: a raw system call; its arguments touch no memory of ours beyond
            // constant strings and zeroed structs that outlive it.
            attempt(unsafe { libc::syscall(libc::SYS_syslog, 3, null, 0) }),
        ),
        (
            "acct",
            // SAFETY: a raw system call; its arguments touch no memory of ours beyond
            // constant strings and zeroed structs that outlive it.
            attempt(unsafe { libc::syscall(libc::SYS_acct, null) }),
        ),
        (
            "swapon",
            // SAFETY: a raw system call; its arguments touch no memory of ours beyond
            // constant strings and zeroed structs that outlive it.
            attempt(unsafe { libc::syscall(libc::SYS_swapon, c"/nonexistent".as_ptr(), 0) }),
        ),
        (
            "settimeofday",
            // SAFETY: a raw system call; its arguments touch no memory of ours beyond
            // constant strings and zeroed structs that outlive it.
            attempt(unsafe { libc::syscall(libc::SYS_settimeofday, null, null) }),
        ),
        (
            "clock_settime",
            // SAFETY: a raw system call; its arguments touch no memory of ours beyond
            // constant strings and zeroed structs that outlive it.
            attempt(unsafe {
                let ts = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                libc::syscall(libc::SYS_clock_settime, libc::CLOCK_REALTIME, &ts)
            }),
        ),
        #[cfg(target_arch = "x86_64")]
        ("keyctl_i386", attempt(keyctl_i386())),
    ];
    for (name, r) in results {
        match r {
            Ok(_) => println!("{name} ok"),
            Err(e) => println!("{name} errno {e}"),
        }
    }
    0
}

fn parse_ip(s: &str) -> [u8; 4] {
    s.parse::<std::net::Ipv4Addr>()
        .map(|a| a.octets())
        .unwrap_or([0; 4])
}

fn parse_mac(s: &str) -> [u8; 6] {
    let mut m = [0u8; 6];
    for (i, p) in s.split(':').take(6).enumerate() {
        m[i] = u8::from_str_radix(p, 16).unwrap_or(0);
    }
    m
}

fn ip_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 header and a UDP datagram (UDP checksum 0: none).
fn ip_udp(src: [u8; 4], dst: [u8; 4], port: u16, msg: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + msg.len();
    let mut p = vec![0u8; 20];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = libc::IPPROTO_UDP as u8;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    let c = ip_checksum(&p);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&40000u16.to_be_bytes());
    p.extend_from_slice(&port.to_be_bytes());
    p.extend_from_slice(&((8 + msg.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(msg);
    p
}

fn udp_raw(src: &str, dst: &str, port: u16, msg: &str) -> i32 {
    // SAFETY: a raw IPv4 socket (IPPROTO_RAW: we give the whole header).
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        println!("socket errno {}", errno());
        return 1;
    }
    let pkt = ip_udp(parse_ip(src), parse_ip(dst), port, msg.as_bytes());
    // SAFETY: sockaddr_in is plain data, zeroed then filled.
    let mut to: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    to.sin_family = libc::AF_INET as u16;
    to.sin_addr.s_addr = u32::from_ne_bytes(parse_ip(dst));
    // SAFETY: sending our buffer to a valid address.
    let n = unsafe {
        libc::sendto(
            fd,
            pkt.as_ptr().cast(),
            pkt.len(),
            0,
            (&to as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        )
    };
    println!("sent {n}");
    0
}

/// Send a whole Ethernet frame on eth0 (AF_PACKET).
fn send_frame(frame: &[u8]) -> i32 {
    // SAFETY: a packet socket; the frame is our buffer.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        if fd < 0 {
            println!("socket errno {}", errno());
            return 1;
        }
        let ifindex = libc::if_nametoindex(c"eth0".as_ptr());
        let mut sa: libc::sockaddr_ll = std::mem::zeroed();
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_ifindex = ifindex as i32;
        sa.sll_halen = 6;
        sa.sll_addr[..6].copy_from_slice(&frame[..6]);
        let n = libc::sendto(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&sa as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        println!("sent {n}");
    }
    0
}

fn frame_udp(smac: &str, dmac: &str, src: &str, dst: &str, port: u16, msg: &str) -> i32 {
    let mut f = Vec::new();
    f.extend_from_slice(&parse_mac(dmac));
    f.extend_from_slice(&parse_mac(smac));
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    f.extend(ip_udp(parse_ip(src), parse_ip(dst), port, msg.as_bytes()));
    send_frame(&f)
}

fn arp_request(smac: &str, sip: &str, tip: &str) -> i32 {
    let mac = parse_mac(smac);
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&mac);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&parse_ip(sip));
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&parse_ip(tip));
    send_frame(&f)
}

fn udp_listen(port: u16, secs: u64) -> i32 {
    let Ok(s) = std::net::UdpSocket::bind(("0.0.0.0", port)) else {
        println!("bind errno {}", errno());
        return 1;
    };
    println!("listening");
    let _ = std::io::stdout().flush();
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let mut buf = [0u8; 2048];
    while let Some(left) = end.checked_duration_since(std::time::Instant::now()) {
        let _ = s.set_read_timeout(Some(left.max(std::time::Duration::from_millis(1))));
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            println!("from {} {}", from.ip(), String::from_utf8_lossy(&buf[..n]));
            let _ = std::io::stdout().flush();
        }
    }
    0
}

/// _IOC(dir, 'E', nr, size)
fn eioc(dir: u64, nr: u64, size: usize) -> u64 {
    dir << 30 | (size as u64) << 16 | (b'E' as u64) << 8 | nr
}

fn open_dev(path: &str, flags: i32) -> i32 {
    let c = std::ffi::CString::new(path).unwrap_or_default();
    // SAFETY: open with a valid path.
    unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) }
}

fn evdev_info(dev: &str) -> i32 {
    let fd = open_dev(dev, libc::O_RDONLY | libc::O_NONBLOCK);
    if fd < 0 {
        println!("open errno {}", errno());
        return 1;
    }
    let mut name = [0u8; 256];
    let mut version = 0i32;
    let mut keys = [0u8; 96];
    // SAFETY: evdev ioctls with buffers of the sizes their numbers encode.
    unsafe {
        let n = libc::ioctl(fd, eioc(2, 0x06, 256) as _, name.as_mut_ptr());
        let end = name.iter().position(|b| *b == 0).unwrap_or(0);
        println!("name {} (ret {n})", String::from_utf8_lossy(&name[..end]));
        libc::ioctl(fd, eioc(2, 0x01, 4) as _, &mut version);
        println!("version {version:#x}");
        libc::ioctl(fd, eioc(2, 0x21, 96) as _, keys.as_mut_ptr());
        if keys[116 / 8] & (1 << (116 % 8)) != 0 {
            println!("key 116");
        }
        let mut abs = [0i32; 6];
        if libc::ioctl(fd, eioc(2, 0x40 + 0x35, 24) as _, abs.as_mut_ptr()) == 0 {
            println!("abs 53 {} {}", abs[1], abs[2]);
        }
        let mut grab = 1i32;
        let r = libc::ioctl(
            fd,
            eioc(1, 0x90, 4) as _,
            &mut grab as *mut i32 as libc::c_long,
        );
        println!("grab {r}");
    }
    0
}

fn evdev_read(dev: &str, n: usize, ms: i32) -> i32 {
    let fd = open_dev(dev, libc::O_RDONLY | libc::O_NONBLOCK);
    if fd < 0 {
        println!("open errno {}", errno());
        return 1;
    }
    println!("open");
    let _ = std::io::stdout().flush();
    let mut got = 0;
    let end = std::time::Instant::now() + std::time::Duration::from_millis(ms as u64);
    while got < n {
        let left = end
            .saturating_duration_since(std::time::Instant::now())
            .as_millis() as i32;
        if left == 0 {
            break;
        }
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd.
        if unsafe { libc::poll(&mut p, 1, left) } <= 0 {
            break;
        }
        let mut buf = [0u8; 24 * 16];
        // SAFETY: reading into our buffer.
        let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if r <= 0 {
            continue;
        }
        for e in buf[..r as usize].chunks_exact(24) {
            let t = u16::from_ne_bytes([e[16], e[17]]);
            let c = u16::from_ne_bytes([e[18], e[19]]);
            let v = i32::from_ne_bytes([e[20], e[21], e[22], e[23]]);
            println!("{t} {c} {v}");
            got += 1;
        }
        let _ = std::io::stdout().flush();
    }
    0
}

fn evdev_write(dev: &str, events: &[String]) -> i32 {
    let fd = open_dev(dev, libc::O_WRONLY);
    if fd < 0 {
        println!("open errno {}", errno());
        return 1;
    }
    let mut buf = Vec::new();
    for e in events {
        let f: Vec<i64> = e.split(':').filter_map(|x| x.parse().ok()).collect();
        if f.len() != 3 {
            continue;
        }
        buf.extend_from_slice(&[0u8; 16]);
        buf.extend_from_slice(&(f[0] as u16).to_ne_bytes());
        buf.extend_from_slice(&(f[1] as u16).to_ne_bytes());
        buf.extend_from_slice(&(f[2] as i32).to_ne_bytes());
    }
    // SAFETY: writing our buffer.
    let r = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    println!("wrote {r}");
    0
}

fn mmap_dev(dev: &str, len: usize) -> i32 {
    let fd = open_dev(dev, libc::O_RDWR);
    if fd < 0 {
        println!("open errno {}", errno());
        return 1;
    }
    // SAFETY: a fresh shared mapping; written only within len, then unmapped.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        );
        if p == libc::MAP_FAILED {
            println!("errno {}", errno());
            return 0;
        }
        std::ptr::write_bytes(p.cast::<u8>(), 0x7f, len.min(4096));
        libc::munmap(p, len);
    }
    println!("ok");
    0
}

/// A uinput keyboard on the host: what a VP's device used to be.
fn uinput_keys(codes: &[u16]) -> i32 {
    let fd = open_dev("/dev/uinput", libc::O_WRONLY | libc::O_NONBLOCK);
    if fd < 0 {
        println!("open errno {}", errno());
        return 1;
    }
    const UI_SET_EVBIT: u64 = 0x4004_5564;
    const UI_SET_KEYBIT: u64 = 0x4004_5565;
    const UI_DEV_SETUP: u64 = 0x405c_5503;
    const UI_DEV_CREATE: u64 = 0x5501;
    let mut setup = [0u8; 92];
    setup[0..2].copy_from_slice(&6u16.to_ne_bytes());
    setup[8..8 + 11].copy_from_slice(b"probe keys\0");
    // SAFETY: uinput ioctls with their documented arguments.
    unsafe {
        libc::ioctl(fd, UI_SET_EVBIT as _, 1);
        for c in codes {
            libc::ioctl(fd, UI_SET_KEYBIT as _, *c as libc::c_int);
        }
        if libc::ioctl(fd, UI_DEV_SETUP as _, setup.as_ptr()) < 0
            || libc::ioctl(fd, UI_DEV_CREATE as _) < 0
        {
            println!("uinput errno {}", errno());
            return 1;
        }
    }
    // Handlers bind to the new device.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let ev = |t: u16, c: u16, v: i32| {
        let mut b = [0u8; 24];
        b[16..18].copy_from_slice(&t.to_ne_bytes());
        b[18..20].copy_from_slice(&c.to_ne_bytes());
        b[20..24].copy_from_slice(&v.to_ne_bytes());
        // SAFETY: writing our buffer.
        unsafe { libc::write(fd, b.as_ptr().cast(), 24) };
    };
    for c in codes {
        ev(1, *c, 1);
        ev(0, 0, 0);
    }
    for c in codes.iter().rev() {
        ev(1, *c, 0);
        ev(0, 0, 0);
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    println!("pressed");
    0
}

/// A uinput accelerometer (INPUT_PROP_ACCELEROMETER, ±8 g in milli-g,
/// resolution 1000 per g) that reports (0, `y_mg`, 0) once a second for
/// `secs` seconds: a host accelerometer for cellsd to find.
fn uinput_accel(y_mg: i32, secs: u64) -> i32 {
    let fd = open_dev("/dev/uinput", libc::O_WRONLY | libc::O_NONBLOCK);
    if fd < 0 {
        println!("open errno {}", errno());
        return 1;
    }
    const UI_SET_EVBIT: u64 = 0x4004_5564;
    const UI_SET_ABSBIT: u64 = 0x4004_5567;
    const UI_SET_PROPBIT: u64 = 0x4004_556e;
    const UI_ABS_SETUP: u64 = 0x401c_5504;
    const UI_DEV_SETUP: u64 = 0x405c_5503;
    const UI_DEV_CREATE: u64 = 0x5501;
    let mut setup = [0u8; 92];
    setup[0..2].copy_from_slice(&6u16.to_ne_bytes());
    setup[8..8 + 19].copy_from_slice(b"probe accelerometer");
    // SAFETY: uinput ioctls with their documented arguments.
    unsafe {
        libc::ioctl(fd, UI_SET_EVBIT as _, 3);
        libc::ioctl(fd, UI_SET_PROPBIT as _, 6);
        for code in 0..3u16 {
            libc::ioctl(fd, UI_SET_ABSBIT as _, code as libc::c_int);
            // struct uinput_abs_setup: code, 2 bytes of padding, input_absinfo.
            let mut a = [0u8; 28];
            a[0..2].copy_from_slice(&code.to_ne_bytes());
            for (i, v) in [0i32, -8000, 8000, 0, 0, 1000].iter().enumerate() {
                a[4 + i * 4..8 + i * 4].copy_from_slice(&v.to_ne_bytes());
            }
            libc::ioctl(fd, UI_ABS_SETUP as _, a.as_ptr());
        }
        if libc::ioctl(fd, UI_DEV_SETUP as _, setup.as_ptr()) < 0
            || libc::ioctl(fd, UI_DEV_CREATE as _) < 0
        {
            println!("uinput errno {}", errno());
            return 1;
        }
    }
    println!("created");
    let _ = std::io::stdout().flush();
    let ev = |t: u16, c: u16, v: i32| {
        let mut b = [0u8; 24];
        b[16..18].copy_from_slice(&t.to_ne_bytes());
        b[18..20].copy_from_slice(&c.to_ne_bytes());
        b[20..24].copy_from_slice(&v.to_ne_bytes());
        // SAFETY: writing our buffer.
        unsafe { libc::write(fd, b.as_ptr().cast(), 24) };
    };
    for i in 0..secs {
        // Each report differs a little: evdev drops a repeated value.
        ev(3, 0, (i % 2) as i32);
        ev(3, 1, y_mg);
        ev(3, 2, 0);
        ev(0, 0, 0);
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    0
}

fn abstract_addr(name: &str) -> (libc::sockaddr_un, u32) {
    // SAFETY: sockaddr_un is plain data.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as u16;
    for (i, b) in name.bytes().take(100).enumerate() {
        a.sun_path[i + 1] = b as libc::c_char;
    }
    (a, (2 + 1 + name.len().min(100)) as u32)
}

fn unix_listen(name: &str, secs: u64) -> i32 {
    let (a, len) = abstract_addr(name);
    // SAFETY: a stream socket bound to our address.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
        if libc::bind(fd, (&a as *const libc::sockaddr_un).cast(), len) != 0
            || libc::listen(fd, 8) != 0
        {
            println!("errno {}", errno());
            return 1;
        }
        println!("listening");
        let _ = std::io::stdout().flush();
        let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while std::time::Instant::now() < end {
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            if libc::poll(&mut p, 1, 100) > 0 {
                let c = libc::accept(fd, std::ptr::null_mut(), std::ptr::null_mut());
                if c >= 0 {
                    libc::write(c, b"hello".as_ptr().cast(), 5);
                    libc::close(c);
                }
            }
        }
    }
    0
}

fn unix_connect(name: &str) -> i32 {
    let (a, len) = abstract_addr(name);
    // SAFETY: a stream socket connected to the address; reading our buffer.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
        if libc::connect(fd, (&a as *const libc::sockaddr_un).cast(), len) != 0 {
            println!("errno {}", errno());
            return 0;
        }
        let mut b = [0u8; 16];
        let n = libc::read(fd, b.as_mut_ptr().cast(), b.len());
        println!("got {}", String::from_utf8_lossy(&b[..n.max(0) as usize]));
    }
    0
}

/// Touch `mib` MiB of anonymous memory, one MiB at a time, printing the
/// progress (a memory limit ends this process on the way).
fn alloc(mib: usize) -> i32 {
    let mut held: Vec<Vec<u8>> = Vec::new();
    for i in 0..mib {
        held.push(vec![0x5a; 1 << 20]);
        if i % 16 == 0 {
            println!("allocated {i} MiB");
            let _ = std::io::stdout().flush();
        }
    }
    println!("allocated all {mib} MiB");
    0
}

/// How many files this process can open (up to `max`).
fn open_files(max: usize) -> i32 {
    let mut held = Vec::new();
    while held.len() < max {
        match std::fs::File::open("/dev/null") {
            Ok(f) => held.push(f),
            Err(e) => {
                println!("opened {} then {e}", held.len());
                return 0;
            }
        }
    }
    println!("opened {}", held.len());
    0
}

fn shm(key: i32, create: bool) -> i32 {
    let flags = if create { libc::IPC_CREAT | 0o600 } else { 0 };
    // SAFETY: shmget with integer arguments.
    let id = unsafe { libc::shmget(key, 4096, flags) };
    if id < 0 {
        println!("errno {}", errno());
    } else if create {
        println!("created {id}");
    } else {
        println!("found {id}");
    }
    0
}

/// A datagram to the VP's logdw with priority `prio`, as-is (a bad one
/// too): the logger must drop what is not an entry.
fn logdw_raw(prio: &str, tag: &str, msg: &str) -> i32 {
    let (sec, nsec) = cells_log::now();
    let mut d = cells_log::writer::text(0, 1, sec, nsec, prio.parse().unwrap_or(0), tag, msg);
    if tag.is_empty() {
        // No tag and no NUL at all: not an entry.
        d.truncate(cells_log::writer::HEADER + 1);
    }
    let fd = match cells_log::client::connect(cells_log::client::LOGDW, libc::SOCK_DGRAM) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("connect: {e}");
            return 1;
        }
    };
    // SAFETY: sending our buffer on our socket.
    let n = unsafe {
        libc::send(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            d.as_ptr().cast(),
            d.len(),
            0,
        )
    };
    if n < 0 {
        eprintln!("send: {}", std::io::Error::last_os_error());
        return 1;
    }
    0
}

/// One command to the VP's logd control socket; print the answer.
fn logd_command(cmd: &str) -> i32 {
    match cells_log::client::control(cmd) {
        Ok(r) => {
            println!("{r}");
            0
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let code = match args.get(1).map(String::as_str) {
        Some("inotify-hold") => inotify_hold(),
        Some("alloc") if args.len() >= 3 => alloc(args[2].parse().unwrap_or(1)),
        Some("open-files") if args.len() >= 3 => open_files(args[2].parse().unwrap_or(1)),
        Some("keyring") => keyring(args.get(2).map(String::as_str)),
        Some("uid-scan") => uid_scan(args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5)),
        Some("syscalls") => syscalls(),
        Some("udp-listen") => udp_listen(
            args.get(2).and_then(|s| s.parse().ok()).unwrap_or(9000),
            args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3),
        ),
        Some("udp-raw") if args.len() >= 6 => udp_raw(
            &args[2],
            &args[3],
            args[4].parse().unwrap_or(9000),
            &args[5],
        ),
        Some("frame-udp") if args.len() >= 8 => frame_udp(
            &args[2],
            &args[3],
            &args[4],
            &args[5],
            args[6].parse().unwrap_or(9000),
            &args[7],
        ),
        Some("arp-request") if args.len() >= 5 => arp_request(&args[2], &args[3], &args[4]),
        Some("evdev-info") if args.len() >= 3 => evdev_info(&args[2]),
        Some("evdev-read") if args.len() >= 5 => evdev_read(
            &args[2],
            args[3].parse().unwrap_or(1),
            args[4].parse().unwrap_or(1000),
        ),
        Some("evdev-write") if args.len() >= 4 => evdev_write(&args[2], &args[3..]),
        Some("unix-listen") if args.len() >= 4 => {
            unix_listen(&args[2], args[3].parse().unwrap_or(3))
        }
        Some("unix-connect") if args.len() >= 3 => unix_connect(&args[2]),
        Some("shm-create") if args.len() >= 3 => shm(args[2].parse().unwrap_or(1), true),
        Some("shm-get") if args.len() >= 3 => shm(args[2].parse().unwrap_or(1), false),
        Some("mmap") if args.len() >= 4 => mmap_dev(&args[2], args[3].parse().unwrap_or(4096)),
        Some("logdw-raw") if args.len() >= 5 => logdw_raw(&args[2], &args[3], &args[4]),
        Some("logd-command") if args.len() >= 3 => logd_command(&args[2]),
        Some("uinput-accel") if args.len() >= 4 => uinput_accel(
            args[2].parse().unwrap_or(1000),
            args[3].parse().unwrap_or(30),
        ),
        Some("uinput-keys") => uinput_keys(
            &args[2..]
                .iter()
                .filter_map(|a| a.parse().ok())
                .collect::<Vec<u16>>(),
        ),
        _ => {
            eprintln!("usage: cells-probe inotify-hold | keyring [DESC] | uid-scan SECS");
            2
        }
    };
    std::process::exit(code);
}
