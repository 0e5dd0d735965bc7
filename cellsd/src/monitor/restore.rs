//! A restore: the VP's cgroup, devices and tree made as for a start, then
//! `criu restore` recreates its processes in them (instead of a fresh init).
//!
//! Differences from a start: the user namespace of the idmapped template is
//! a placeholder's (same maps; CRIU makes the VP's own from its images);
//! proc and sysfs are mounted from the monitor's namespaces, only as the
//! place the external mounts below them are taken from (CRIU mounts the
//! VP's own); `/dev` is handed to CRIU as a copy of its skeleton; the network
//! device attaches when CRIU has made the VP's namespaces (its
//! `setup-namespaces` action, reported through a FIFO); the restored init
//! becomes the monitor's child (the monitor is a subreaper, criu runs with
//! `--restore-detached`).

use super::start::{
    abandon_cgroup, claim_cgroup, detach_stdio, device_mounts, prepare_vp, publish, run_state,
    Groundwork, StartedVp,
};
use super::*;
use crate::criu;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;

/// The first fd number the external terminals and files get in criu.
const INHERIT_FD_BASE: i32 = 10;

pub(super) fn restore(
    req: &MonitorRequest,
    r: &RestoreRequest,
    spare: Option<&VpCgroup>,
    ground: Groundwork,
) -> Result<StartedVp, MonitorError> {
    let cfg = &req.config;
    let owner = cfg.host_root_id();
    let lower = req.run_dir.join("lower");
    let rootfs = req.run_dir.join("rootfs");
    let skeleton = req.run_dir.join("dev-skeleton");
    for d in [&lower, &rootfs, &skeleton] {
        std::fs::create_dir_all(d).map_err(step(&format!("mkdir {}", d.display())))?;
    }
    if let Some(disk) = &req.disk {
        crate::disk::mount(disk)?;
    }
    let Groundwork { signals, .. } = ground;
    let leave_cgroup = |e: MonitorError| abandon_cgroup(req, e);
    let v2_cgroup = claim_cgroup(req, spare)?;
    let Made {
        fds: mut device_fds,
        nodes: device_nodes,
        dirs: device_dirs,
        ro_dirs: device_ro_dirs,
        binderfs,
        held,
        live,
    } = make_devices(req).map_err(|e| leave_cgroup(e.during("creating the VP's devices")))?;
    let live = std::cell::RefCell::new(live);
    let end_devices = || {
        for d in live.borrow_mut().iter_mut().rev() {
            d.ended();
        }
    };
    let fail0 = |e: MonitorError| -> MonitorError {
        end_devices();
        leave_cgroup(e)
    };
    let (mut device_nodes, mut device_dirs) = (device_nodes, device_dirs);
    runtime_files(req, &mut device_nodes, &mut device_dirs)
        .map_err(|e| fail0(e.during("writing the VP's properties and network files")))?;
    if let Some(saved) = &r.framebuffer {
        restore_framebuffer(device_fds.fb, saved).map_err(&fail0)?;
    }

    // The template is attached idmapped with the VP's maps: a placeholder
    // process holds a user namespace with them meanwhile.
    let holder = if owner.is_some() {
        Some(UsernsHolder::new(owner).map_err(&fail0)?)
    } else {
        None
    };
    prepare_vp(
        req,
        holder.as_ref().map(|h| h.pid).unwrap_or(0),
        &lower,
        &rootfs,
    )
    .map_err(&fail0)?;
    drop(holder);

    // Every device but the network serves now (FUSE servers must answer
    // when criu reopens their files); the network attaches to the VP's
    // namespace once CRIU has made it.
    let served = live.borrow_mut().iter_mut().try_for_each(|d| {
        if d.name() == model::NETWORK {
            return Ok(());
        }
        d.serve(0, &mut device_fds)
            .map_err(|source| MonitorError::Device {
                device: d.name(),
                source,
            })
    });
    served.map_err(&fail0)?;
    let mounts = device_mounts(req, device_nodes, device_dirs, device_ro_dirs, binderfs);
    let steps = rootfs::plan(&cfg.runtime, &rootfs, &mounts, owner).map_err(|e| fail0(e.into()))?;
    let applied = rootfs::apply(&rootfs, &steps, owner, &mut host_kernel_mounts)
        .map_err(|e| fail0(e.into()))?;
    let Some((master, slave)) = applied.console else {
        return Err(fail0(
            "the VP's spec has no devpts mount for its console".into(),
        ));
    };
    let mounted = live.borrow_mut().iter_mut().try_for_each(|d| {
        d.mounted(&rootfs, &mut device_fds)
            .map_err(|source| MonitorError::Device {
                device: d.name(),
                source,
            })
    });
    mounted.map_err(&fail0)?;
    let dev_mount = steps.iter().find_map(|s| match s {
        rootfs::Step::Mount {
            target,
            fstype,
            flags,
            data,
            ..
        } if *target == rootfs.join("dev") => Some((fstype.clone(), *flags, data.clone())),
        _ => None,
    });
    let Some((dev_fstype, dev_flags, dev_data)) = dev_mount else {
        return Err(fail0("the VP's spec mounts nothing at /dev".into()));
    };
    mount(
        Some("tmpfs"),
        &skeleton,
        dev_fstype.as_deref(),
        dev_flags,
        dev_data.as_deref(),
    )
    .map_err(|e| fail0(step("mount the /dev skeleton")(e)))?;
    copy_skeleton(&rootfs.join("dev"), &skeleton)
        .map_err(|e| fail0(step("copy the /dev skeleton")(e)))?;

    // CRIU's root: the overlay alone (a bind without what is mounted on
    // it: the tree above is only where the external mounts come from, and
    // its proc and sysfs are the monitor's, never the VP's).
    let clean_root = req.run_dir.join("root");
    std::fs::create_dir_all(&clean_root).map_err(|e| fail0(step("mkdir root")(e)))?;
    mount(
        Some(rootfs.as_path()),
        &clean_root,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| fail0(step("bind the VP's root for criu")(e)))?;

    // The external terminals: the new console, GPS and modem ptys.
    let mut ttys = Vec::new();
    for (i, (key, path)) in r.ttys.iter().enumerate() {
        let p = rootfs.join(path.trim_start_matches('/'));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NOFOLLOW)
            .open(&p)
            .map_err(|e| fail0(step(&format!("open {}", p.display()))(e)))?;
        ttys.push((key.clone(), INHERIT_FD_BASE + i as i32, OwnedFd::from(f)));
    }

    // The device files the VP's processes had open, opened anew: a file of
    // one of this monitor's FUSE devices, nothing else.
    for f in &r.files {
        let p = rootfs.join(f.path.trim_start_matches('/'));
        let opened = std::fs::OpenOptions::new()
            .read(f.flags & libc::O_ACCMODE != libc::O_WRONLY)
            .write(f.flags & libc::O_ACCMODE != libc::O_RDONLY)
            .custom_flags(libc::O_NOCTTY | libc::O_NOFOLLOW | (f.flags & libc::O_NONBLOCK))
            .open(&p)
            .map_err(|e| fail0(step(&format!("open {}", p.display()))(e)))?;
        let fuse = nix::sys::statfs::fstatfs(&opened)
            .map(|s| s.filesystem_type() == nix::sys::statfs::FUSE_SUPER_MAGIC)
            .unwrap_or(false);
        if !fuse {
            return Err(fail0(MonitorError::Failed(format!(
                "{} is not a file of the VP's devices here: the checkpoint does not fit this VP",
                f.path
            ))));
        }
        let n = INHERIT_FD_BASE + ttys.len() as i32;
        ttys.push((f.key.clone(), n, OwnedFd::from(opened)));
    }

    // criu's setup-namespaces action reports the init's pid and waits.
    let pid_fifo = req.run_dir.join("criu.pid");
    let go_fifo = req.run_dir.join("criu.go");
    let script = req.run_dir.join("criu-action");
    for f in [&pid_fifo, &go_fifo] {
        let _ = std::fs::remove_file(f);
        nix::unistd::mkfifo(f.as_path(), nix::sys::stat::Mode::from_bits_truncate(0o600))
            .map_err(|e| fail0(step(&format!("mkfifo {}", f.display()))(e)))?;
    }
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$CRTOOLS_SCRIPT_ACTION\" in\n\
             setup-namespaces) echo \"$CRTOOLS_INIT_PID\" > '{p}' && read -r ok < '{g}' && [ \"$ok\" = go ] ;;\n\
             post-restore) echo post-restore > '{p}' && read -r ok < '{g}' && [ \"$ok\" = go ] ;;\n\
             esac\n",
            p = pid_fifo.display(),
            g = go_fifo.display()
        ),
    )
    .and_then(|_| std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)))
    .map_err(|e| fail0(step("write criu's action script")(e)))?;

    let sources = criu::restore_sources(&r.mounts, &rootfs, &skeleton);
    let tty_fds: Vec<(String, i32)> = ttys.iter().map(|(k, n, _)| (k.clone(), *n)).collect();
    let mut args = vec![
        "restore".to_string(),
        "-D".into(),
        r.images.display().to_string(),
        "-o".into(),
        r.log.display().to_string(),
        "-v2".into(),
    ];
    args.extend(criu::restore_args(&clean_root, &sources, &tty_fds, &script));

    // VP root binds the external mounts inside its namespace: it must be
    // able to pass through the run folders meanwhile (search only, and
    // this VP's folder only to its own group).
    let vps_dir = req.run_dir.parent().map(Path::to_path_buf);
    let open_up = || -> std::io::Result<()> {
        if let Some(v) = &vps_dir {
            std::fs::set_permissions(v, std::fs::Permissions::from_mode(0o711))?;
        }
        if let Some(id) = owner {
            std::os::unix::fs::chown(&req.run_dir, Some(0), Some(id))?;
        }
        std::fs::set_permissions(&req.run_dir, std::fs::Permissions::from_mode(0o710))
    };
    let close_down = || {
        let _ = std::fs::set_permissions(&req.run_dir, std::fs::Permissions::from_mode(0o700));
        let _ = std::os::unix::fs::chown(&req.run_dir, Some(0), Some(0));
        if let Some(v) = &vps_dir {
            let _ = std::fs::set_permissions(v, std::fs::Permissions::from_mode(0o700));
        }
    };
    open_up().map_err(|e| {
        close_down();
        fail0(step("open the run folder to the VP's root")(e))
    })?;

    // The restored tree is criu's child until criu exits; then ours.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let me = std::process::id() as i32;
    let own_v2 = own_v2_cgroup();
    if let Some(dir) = req
        .cgroup
        .hierarchy
        .v2_dir(&req.cgroup.rel)
        .filter(|_| v2_cgroup.is_some())
    {
        let _ = std::fs::write(dir.join("cgroup.procs"), me.to_string());
    }
    if spare.is_none() {
        let _ = req.cgroup.add(me);
    }
    let mut cmd = std::process::Command::new(&r.criu);
    cmd.args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    let raw: Vec<(i32, i32)> = ttys.iter().map(|(_, n, fd)| (fd.as_raw_fd(), *n)).collect();
    // SAFETY: only dup2 (async-signal-safe) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            for (from, to) in &raw {
                if libc::dup2(*from, *to) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let spawned = cmd.spawn();
    let back_out = || {
        let _ = req.cgroup.move_to_parent_v1(me);
        if let Some(p) = &own_v2 {
            let _ = std::fs::write(p.join("cgroup.procs"), me.to_string());
        }
    };
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            back_out();
            close_down();
            return Err(fail0(MonitorError::Failed(format!(
                "run {}: {e}: install CRIU (Debian: apt install criu) or give cellsd --criu PATH",
                r.criu.display()
            ))));
        }
    };
    back_out();
    drop(ttys);

    let criu_failed = |what: &str| -> MonitorError {
        let tail = criu::log_errors(&r.log);
        MonitorError::Failed(format!(
            "criu restore {what}; see {}:\n{tail}",
            r.log.display()
        ))
    };
    // Wait for the namespaces (or criu's end).
    let mut pid_file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&pid_fifo)
        .map_err(|e| fail0(step("open criu.pid")(e)))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut text = String::new();
    let init = loop {
        let mut buf = [0u8; 32];
        if let Ok(n) = pid_file.read(&mut buf) {
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
            if text.ends_with('\n') {
                break text.trim().parse::<i32>().ok();
            }
        }
        if let Ok(Some(st)) = child.try_wait() {
            close_down();
            return Err(fail0(criu_failed(&format!(
                "ended ({st}) before the VP's namespaces existed"
            ))));
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            close_down();
            return Err(fail0(criu_failed("made no namespaces within 120 s")));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let Some(pid) = init else {
        let _ = child.kill();
        let _ = child.wait();
        close_down();
        return Err(fail0(criu_failed("reported no pid")));
    };
    // The network: the veth into the new namespace, and its loopback up
    // (the VP's sockets on 127.0.0.1 are restored next).
    let net = attach_network(&live, pid, &mut device_fds);
    let answer = |ok: bool| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&go_fifo)
            .and_then(|mut f| f.write_all(if ok { b"go\n" } else { b"no\n" }))
    };
    let go = answer(net.is_ok());
    // criu's post-restore action (every process restored, none running
    // yet): the VP's /proc and /sys locked as a fresh VP's are.
    let mut locked: Result<(), MonitorError> =
        Err("criu ended before its post-restore action".into());
    if net.is_ok() && go.is_ok() {
        let mut more = String::new();
        loop {
            let mut buf = [0u8; 32];
            if let Ok(n) = pid_file.read(&mut buf) {
                more.push_str(&String::from_utf8_lossy(&buf[..n]));
                if more.ends_with('\n') {
                    break;
                }
            }
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if more.trim() == "post-restore" {
            let plan = rootfs::plan(&cfg.runtime, &req.run_dir.join("relock"), &mounts, owner);
            locked = plan.map_err(MonitorError::from).and_then(|plan| {
                super::relock::relock(
                    pid,
                    &rootfs,
                    &clean_root,
                    &req.run_dir.join("relock"),
                    plan,
                    owner,
                )
            });
            if let Err(e) = &locked {
                tracing::warn!("{e}");
            }
            let _ = answer(locked.is_ok());
        }
    }
    let status = child.wait();
    close_down();
    for f in [&pid_fifo, &go_fifo, &script] {
        let _ = std::fs::remove_file(f);
    }
    for m in [&skeleton, &clean_root] {
        let _ = nix::mount::umount2(m.as_path(), nix::mount::MntFlags::MNT_DETACH);
    }
    let fail = |e: MonitorError| -> MonitorError {
        // SAFETY: kill + reap what criu restored (our child now, or gone).
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        let _ = std::fs::remove_file(&req.run_state);
        fail0(e)
    };
    net.map_err(&fail)?;
    go.map_err(|e| fail(step("answer criu's action")(e)))?;
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => {
            return Err(fail(match locked {
                Err(e) => e,
                Ok(()) => criu_failed(&format!("failed ({s})")),
            }))
        }
        Err(e) => return Err(fail(step("wait for criu")(e))),
    }
    // criu exits 0 only after its post-restore action said go.
    locked.map_err(&fail)?;
    for d in live.borrow_mut().iter_mut() {
        d.released();
    }
    emit(&MonitorEvent::Init { pid });
    let state = run_state(req, pid, device_fds);
    let console = publish(req, &state).map_err(&fail)?;
    detach_stdio();
    Ok(StartedVp {
        console,
        init: pid,
        devices: live.into_inner(),
        freezing: false,
        _held: held,
        master,
        _slave: slave,
        signals,
        state,
    })
}

fn attach_network(
    live: &std::cell::RefCell<Vec<Box<dyn VpDevice>>>,
    pid: i32,
    fds: &mut crate::devices::registry::DeviceFds,
) -> Result<(), MonitorError> {
    for d in live.borrow_mut().iter_mut() {
        if d.name() == model::NETWORK {
            d.serve(pid, fds).map_err(|source| MonitorError::Device {
                device: d.name(),
                source,
            })?;
        }
    }
    // Loopback up inside the VP's network namespace (this thread only).
    let own = std::fs::File::open("/proc/thread-self/ns/net").map_err(step("open own netns"))?;
    let theirs =
        std::fs::File::open(format!("/proc/{pid}/ns/net")).map_err(step("open the VP's netns"))?;
    nix::sched::setns(&theirs, CloneFlags::CLONE_NEWNET)
        .map_err(step("setns into the VP's netns"))?;
    let up = loopback_up();
    nix::sched::setns(&own, CloneFlags::CLONE_NEWNET).map_err(step("setns back"))?;
    up.map_err(step("loopback up in the VP"))
}

/// proc and sysfs of the monitor's own namespaces where the VP has its own
/// (only the place external mounts below them are bound from).
fn host_kernel_mounts(mounts: &[rootfs::KernelMount]) -> Result<(), rootfs::RootfsError> {
    for m in mounts {
        mount(
            Some(m.fstype.as_str()),
            &m.target,
            Some(m.fstype.as_str()),
            m.flags,
            m.data.as_deref(),
        )
        .map_err(|e| rootfs::RootfsError::VpKernel {
            what: m.fstype.clone(),
            msg: format!("mount on {}: {e}", m.target.display()),
        })?;
    }
    Ok(())
}

/// The folders, links and (empty) files of `from` (a fresh /dev the monitor
/// built; no VP process has run in it) in `to`, with their owners and
/// modes; what is mounted below `from` becomes an empty file or folder.
fn copy_skeleton(from: &Path, to: &Path) -> std::io::Result<()> {
    let top = std::fs::symlink_metadata(from)?.dev();
    fn walk(from: &Path, to: &Path, top: u64) -> std::io::Result<()> {
        for e in std::fs::read_dir(from)? {
            let e = e?;
            let src = e.path();
            let dst = to.join(e.file_name());
            let m = std::fs::symlink_metadata(&src)?;
            let ft = m.file_type();
            if ft.is_symlink() {
                std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
            } else if ft.is_dir() {
                std::fs::create_dir(&dst)?;
                std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(m.mode() & 0o7777))?;
                if m.dev() == top {
                    walk(&src, &dst, top)?;
                }
            } else {
                std::fs::File::create(&dst)?;
                std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(m.mode() & 0o7777))?;
            }
            std::os::unix::fs::lchown(&dst, Some(m.uid()), Some(m.gid()))?;
        }
        Ok(())
    }
    walk(from, to, top)
}

fn restore_framebuffer(fb: i32, saved: &Path) -> Result<(), MonitorError> {
    if fb < 0 {
        return Ok(());
    }
    let data = std::fs::read(saved).map_err(step(&format!("read {}", saved.display())))?;
    // SAFETY: the monitor holds `fb` open (its device fds) for the VP's life.
    let f = unsafe { std::os::fd::BorrowedFd::borrow_raw(fb) };
    let file = std::fs::File::from(
        f.try_clone_to_owned()
            .map_err(step("dup the framebuffer"))?,
    );
    let len = file.metadata().map_err(step("stat the framebuffer"))?.len() as usize;
    if data.len() != len {
        return Err(MonitorError::Failed(format!(
            "the saved framebuffer has {} bytes, this panel's has {len}: restore on a device with the same panel geometry",
            data.len()
        )));
    }
    std::os::unix::fs::FileExt::write_all_at(&file, &data, 0).map_err(step("write the framebuffer"))
}

/// The monitor's v2 cgroup folder (to go back to after criu started).
fn own_v2_cgroup() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let root = std::fs::read_to_string("/proc/self/mountinfo")
        .ok()?
        .lines()
        .find(|l| l.contains(" - cgroup2 "))
        .and_then(|l| l.split(' ').nth(4).map(PathBuf::from))?;
    Some(root.join(rel.trim_start_matches('/')))
}

/// A child in a new user namespace with the VP's maps, alive while this
/// value is (it waits on a pipe; dropping the value ends and reaps it).
struct UsernsHolder {
    pid: libc::pid_t,
    _hold: OwnedFd,
}

impl UsernsHolder {
    fn new(owner: Option<u32>) -> Result<Self, MonitorError> {
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(step("pipe"))?;
        let euid = match owner {
            Some(id) => {
                Some(sys::EuidGuard::set(id).map_err(step("setresuid for the placeholder"))?)
            }
            None => None,
        };
        // SAFETY: the child only reads a pipe and exits (raw system calls).
        let pid = unsafe { sys::clone_process(libc::CLONE_NEWUSER) };
        if let Ok(0) = pid {
            // SAFETY: raw read and _exit in the child.
            unsafe {
                let mut b = 0u8;
                libc::read(r.as_raw_fd(), (&mut b as *mut u8).cast(), 1);
                libc::_exit(0);
            }
        }
        drop(euid);
        let pid = pid.map_err(step("clone the user namespace placeholder"))?;
        Ok(Self { pid, _hold: w })
    }
}

impl Drop for UsernsHolder {
    fn drop(&mut self) {
        // SAFETY: our own child; closing the pipe (below, after this) would
        // end it too, the kill makes it immediate.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}
