//! The start: groundwork before the request, the VP's cgroup, devices, clone, mounts and network, until its init has exec'd.

use super::*;

/// Turn up the loopback interface of the (new) network namespace.
pub(super) fn loopback_up() -> std::io::Result<()> {
    // SAFETY: ioctl on a fresh socket with a zeroed, NUL-terminated ifreq.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let sock = OwnedFd::from_raw_fd(fd);
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// What the monitor holds of a started VP.
pub(super) struct StartedVp {
    /// The console socket, bound before `Started` so that a console request
    /// right after the start finds it.
    pub(super) console: Option<UnixListener>,
    pub(super) init: libc::pid_t,
    /// The devices' VP sides that live on here (FUSE servers, the power
    /// link, ...), in the model's order.
    pub(super) devices: Vec<Box<dyn VpDevice>>,
    /// What the devices were last told about freezing.
    pub(super) freezing: bool,
    /// The VP's device fds: open for the VP's whole life.
    pub(super) _held: Vec<OwnedFd>,
    pub(super) master: OwnedFd,
    /// Kept open so the master never sees a hang-up between console users.
    pub(super) _slave: OwnedFd,
    pub(super) signals: SignalFd,
    /// What run.json says; written again on SIGUSR1 (a cellsd that finds
    /// the VP running without it asks for it).
    pub(super) state: RunState,
}

/// The file an OCI container's init waits at (`<run>/vps/NAME/exec.fifo`,
/// VP root's, 0600): opened here as a path only; the init opens it for
/// writing through /proc/self/fd and blocks until `cells-runtime start`
/// opens it for reading.
pub(super) fn exec_fifo(req: &MonitorRequest, owner: Option<u32>) -> Result<OwnedFd, MonitorError> {
    let path = req.run_dir.join(crate::oci::runtime::EXEC_FIFO);
    let _ = std::fs::remove_file(&path);
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(step(&format!("mkfifo {}", path.display())))?;
    if let Some(id) = owner {
        std::os::unix::fs::lchown(&path, Some(id), Some(id))
            .map_err(step(&format!("chown {}", path.display())))?;
    }
    let fd = nix::fcntl::open(
        &path,
        OFlag::O_PATH | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(step(&format!("open {}", path.display())))?;
    Ok(fd)
}

/// Join the namespaces an OCI container names by path (a pod's network,
/// IPC and UTS namespaces): the monitor enters them, the init inherits
/// them through the clone (which makes no new one of those kinds).
fn join_namespaces(oci: &crate::oci::OciSource) -> Result<(), MonitorError> {
    for j in &oci.join {
        let flag = match j.kind.as_str() {
            "network" => CloneFlags::CLONE_NEWNET,
            "ipc" => CloneFlags::CLONE_NEWIPC,
            "uts" => CloneFlags::CLONE_NEWUTS,
            other => return Err(format!("cannot join a {other} namespace").into()),
        };
        let f = std::fs::File::open(&j.path).map_err(step(&format!(
            "open the {} namespace {}",
            j.kind,
            j.path.display()
        )))?;
        nix::sched::setns(&f, flag).map_err(step(&format!(
            "join the {} namespace {}",
            j.kind,
            j.path.display()
        )))?;
    }
    Ok(())
}

/// What a monitor sets up before it knows which VP it starts: its private
/// mount namespace, its signalfd and the channels to the init. A spare
/// monitor does this while it waits.
pub(super) struct Groundwork {
    pub(super) signals: SignalFd,
    /// "go" to the init, with the fd of the VP's run dir (a socket pair).
    pub(super) go: (OwnedFd, OwnedFd),
    pub(super) err: (OwnedFd, OwnedFd),
}

pub(super) fn groundwork() -> Result<Groundwork, MonitorError> {
    nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(step("unshare(mount namespace)"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(step("make / private"))?;
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGUSR1,
    ] {
        mask.add(s);
    }
    mask.thread_block().map_err(step("block signals"))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(step("signalfd"))?;
    let go = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::SeqPacket,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
    .map_err(step("socketpair"))?;
    let err = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(step("pipe"))?;
    Ok(Groundwork { signals, go, err })
}

pub(super) fn start(
    req: &MonitorRequest,
    spare: Option<&VpCgroup>,
    ground: Groundwork,
) -> Result<StartedVp, MonitorError> {
    let cfg = &req.config;
    let owner = cfg.host_root_id();
    let lower = req.run_dir.join("lower");
    let rootfs = req.run_dir.join("rootfs");
    for d in [&lower, &rootfs] {
        std::fs::create_dir_all(d).map_err(step(&format!("mkdir {}", d.display())))?;
    }
    if let Some(disk) = &req.disk {
        crate::disk::mount(disk)?;
        phase("disk");
    }
    let Groundwork {
        signals,
        go: (go_parent, go_child),
        err: (err_r, err_w),
    } = ground;
    phase("signals, channels");

    // The VP's cgroup: the spare this monitor already sits in is renamed
    // (v1), the v2 part is entered by the clone itself. Either way no
    // process migration (an RCU grace period) is on the start's path.
    let leave_cgroup = |e: MonitorError| abandon_cgroup(req, e);
    let v2_cgroup = claim_cgroup(req, spare)?;
    phase("cgroup");

    let Made {
        fds: mut device_fds,
        nodes: mut device_nodes,
        dirs: mut device_dirs,
        ro_dirs: device_ro_dirs,
        binderfs,
        held,
        live,
    } = make_devices(req).map_err(|e| leave_cgroup(e.during("creating the VP's devices")))?;
    // Each live device cleans up if the start fails from here on.
    let live = std::cell::RefCell::new(live);
    let end_devices = || {
        for d in live.borrow_mut().iter_mut().rev() {
            d.ended();
        }
    };
    runtime_files(req, &mut device_nodes, &mut device_dirs).map_err(|e| {
        end_devices();
        leave_cgroup(e.during("writing the VP's properties and network files"))
    })?;
    phase("devices");

    let seccomp = cfg.seccomp_filter().map_err(|e| {
        end_devices();
        leave_cgroup(e.into())
    })?;
    // An OCI container: the init waits at its exec fifo until
    // `cells-runtime start`; the namespaces it joins are joined here.
    let fifo = match &cfg.cells.oci {
        Some(o) => {
            let f = exec_fifo(req, owner).and_then(|f| {
                join_namespaces(o)?;
                Ok(f)
            });
            Some(f.map_err(|e| {
                end_devices();
                leave_cgroup(e)
            })?)
        }
        None => None,
    };
    let flags = clone_flags(cfg).bits();
    // The VP's user namespace is created with VP root's host uid as the
    // effective uid: it then belongs to that uid, and the kernel charges
    // what the VP uses (inotify instances, user namespaces, ...) to it, not
    // to host root.
    let euid = match owner {
        Some(id) if flags & libc::CLONE_NEWUSER != 0 => {
            Some(sys::EuidGuard::set(id).map_err(|e| {
                end_devices();
                leave_cgroup(step("setresuid for the VP's user namespace")(e))
            })?)
        }
        _ => None,
    };
    // SAFETY: the monitor is single-threaded (a fresh exec of cellsd).
    let cloned = unsafe {
        match &v2_cgroup {
            Some(cg) => sys::clone_into_cgroup(flags, cg),
            None => sys::clone_process(flags),
        }
    };
    if let Ok(0) = cloned {
        // The child keeps the effective uid (the guard is not dropped here).
        std::mem::forget(euid);
        drop(go_parent);
        drop(err_r);
        init_child(
            req,
            go_child,
            err_w,
            seccomp.as_ref(),
            fifo.as_ref().map(|f| f.as_raw_fd()),
        );
    }
    drop(euid);
    drop(fifo);
    close_oci_stdio();
    let pid = cloned.map_err(|e| {
        end_devices();
        leave_cgroup(step("clone the VP's init")(e))
    })?;
    drop(go_child);
    drop(err_w);

    let fail = |e: MonitorError| -> MonitorError {
        // SAFETY: kill + reap our own child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        end_devices();
        let _ = std::fs::remove_file(&req.run_state);
        leave_cgroup(e)
    };
    phase("clone");
    if spare.is_none() {
        // No spare was prepared: move the init into the v1 cgroups (slow path).
        for d in req.cgroup.hierarchy.v1_dirs(&req.cgroup.rel) {
            let p = d.join("cgroup.procs");
            std::fs::write(&p, pid.to_string())
                .map_err(|e| fail(step(&p.display().to_string())(e)))?;
        }
    }
    // Now that the init is cloned the monitor may have threads: the
    // devices start serving (FUSE file systems, whose nodes the mounts
    // below bind; the power link; the veth into the init's network
    // namespace) before the init runs.
    let served = live.borrow_mut().iter_mut().try_for_each(|d| {
        let r = d
            .serve(pid, &mut device_fds)
            .map_err(|source| MonitorError::Device {
                device: d.name(),
                source,
            });
        phase(d.name());
        r
    });
    served.map_err(fail)?;
    prepare_vp(req, pid, &lower, &rootfs).map_err(fail)?;
    phase("maps, template, overlay");
    // The VP's whole tree, built here as host root: in the init's copy of
    // this namespace every mount is locked.
    let mounts = device_mounts(req, device_nodes, device_dirs, device_ro_dirs, binderfs);
    let steps = rootfs::plan(&cfg.runtime, &rootfs, &mounts, owner).map_err(|e| fail(e.into()))?;
    let applied = rootfs::apply(&rootfs, &steps, owner, &mut |k| vp_kernel_mounts(pid, k))
        .map_err(|e| fail(e.into()))?;
    let Some((master, slave)) = applied.console else {
        return Err(fail(
            "the VP's spec has no devpts mount for its console".into(),
        ));
    };
    phase("mounts");
    // The VP's tree is built: devices that add to it do so now.
    let mounted = live.borrow_mut().iter_mut().try_for_each(|d| {
        d.mounted(&rootfs, &mut device_fds)
            .map_err(|source| MonitorError::Device {
                device: d.name(),
                source,
            })
    });
    mounted.map_err(fail)?;

    emit(&MonitorEvent::Init { pid });
    let run_dir = std::fs::File::open(&req.run_dir)
        .map_err(|e| fail(step(&format!("open {}", req.run_dir.display()))(e)))?;
    sys::send_fds(&go_parent, b"g", &[run_dir.as_raw_fd()])
        .map_err(|e| fail(step("release init")(e)))?;
    drop(run_dir);
    drop(go_parent);
    for d in live.borrow_mut().iter_mut() {
        d.released();
    }
    phase("released");

    // The error pipe is close-on-exec in the child: EOF means exec
    // succeeded. An OCI container's init writes one NUL byte instead when
    // it is ready and waits at its exec fifo ("created").
    let mut err_file = std::fs::File::from(err_r);
    let mut bytes = vec![0u8; 1];
    let err = match err_file.read(&mut bytes) {
        Ok(1) if bytes[0] != 0 => {
            let _ = err_file.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        }
        _ => String::new(),
    };
    drop(err_file);
    if !err.is_empty() {
        return Err(fail(err.into()));
    }
    phase("init exec'd");
    let me = std::process::id() as i32;
    let state = run_state(req, pid, device_fds);
    let console = publish(req, &state).map_err(&fail)?;
    if cfg.cells.oci.is_some() {
        // An OCI container's monitor is the process containerd's shim
        // knows: its cgroups are the ones the shim reads the container's
        // statistics from (all but the freezer: the monitor serves the
        // VP's FUSE devices, it must not freeze with the VP).
        if let Err(e) = req.cgroup.add_unfrozen(me) {
            log(&format!("joining the VP's cgroup: {e}"));
        }
    } else if let Err(e) = req.cgroup.move_to_parent_v1(me) {
        // The monitor itself does not belong to the VP (its pids, memory, freezer).
        log(&format!("leaving the VP's cgroup: {e}"));
    }
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

/// The VP's cgroup out of the spare this monitor sits in (see
/// [`VpCgroup::claim`]), with the spec's limits; on failure it is left and
/// removed. Returns the v2 directory, opened, for CLONE_INTO_CGROUP.
pub(super) fn claim_cgroup(
    req: &MonitorRequest,
    spare: Option<&VpCgroup>,
) -> Result<Option<OwnedFd>, MonitorError> {
    let resources = req
        .config
        .runtime
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref());
    req.cgroup
        .claim(spare, resources)
        .map_err(|e| abandon_cgroup(req, e.into()))
}

/// A start (or restore) failed: the monitor leaves the VP's cgroup and
/// removes it; returns `e`.
pub(super) fn abandon_cgroup(req: &MonitorRequest, e: MonitorError) -> MonitorError {
    let _ = req.cgroup.move_to_parent_v1(std::process::id() as i32);
    let _ = req.cgroup.destroy(Duration::from_secs(5));
    e
}

/// What run.json records of a VP whose init is `pid`.
pub(super) fn run_state(req: &MonitorRequest, pid: i32, devices: DeviceFds) -> RunState {
    let me = std::process::id() as i32;
    RunState {
        init_pid: pid,
        init_start_time: sys::process_start_time(pid).unwrap_or(0),
        monitor_pid: me,
        monitor_start_time: sys::process_start_time(me).unwrap_or(0),
        started_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        template_build: req.template_build.clone(),
        devices,
    }
}

/// The VP runs: write run.json, bind the console socket (before `Started`,
/// so a console request right after finds it), report `Started` and wait
/// for cellsd's "ack" (it holds a pidfd of the init then).
pub(super) fn publish(
    req: &MonitorRequest,
    state: &RunState,
) -> Result<Option<UnixListener>, MonitorError> {
    write_run_state(&req.run_state, state)
        .map_err(step(&format!("write {}", req.run_state.display())))?;
    let _ = std::fs::remove_file(&req.console_socket);
    let console = UnixListener::bind(&req.console_socket).ok();
    if let Some(l) = &console {
        let _ = l.set_nonblocking(true);
        let _ = std::fs::set_permissions(
            &req.console_socket,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        );
    }
    emit(&MonitorEvent::Started);
    let mut ack = String::new();
    let _ = std::io::stdin().lock().read_line(&mut ack);
    Ok(console)
}

/// cellsd's pipes are not needed any more; the VP must not depend on them.
pub(super) fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        // SAFETY: dup2 onto stdin/stdout.
        unsafe {
            libc::dup2(null.as_raw_fd(), 0);
            libc::dup2(null.as_raw_fd(), 1);
        }
    }
}

/// Mount `mounts` (proc, sysfs) from inside the VP's pid and network
/// namespaces: a child joins them (setns to a pid namespace only affects
/// children), its child is then a process of the VP's pid namespace with
/// host credentials that mounts them into the monitor's namespace and
/// exits. It exists while the VP's init still waits for "go": no code of
/// the VP runs meanwhile. Only raw system calls after the fork.
/// What the VP's tree binds of its devices and the host (its adb keys, read-only).
pub(super) fn device_mounts(
    req: &MonitorRequest,
    nodes: Vec<(PathBuf, String)>,
    dirs: Vec<(PathBuf, String)>,
    ro_dirs: Vec<(PathBuf, String)>,
    binderfs: bool,
) -> rootfs::DeviceMounts {
    rootfs::DeviceMounts {
        nodes,
        dirs,
        ro_dirs: req
            .adb_keys
            .iter()
            .map(|d| (d.clone(), VP_ADB_DIR.to_string()))
            .chain(ro_dirs)
            .collect(),
        binderfs,
    }
}

pub(super) fn vp_kernel_mounts(
    init: i32,
    mounts: &[rootfs::KernelMount],
) -> Result<(), rootfs::RootfsError> {
    let bad = |msg: String| rootfs::RootfsError::VpKernel {
        what: mounts
            .iter()
            .map(|m| m.fstype.clone())
            .collect::<Vec<_>>()
            .join(", "),
        msg,
    };
    let pidfd = sys::pidfd_open(init).map_err(|e| bad(format!("pidfd of the init: {e}")))?;
    let c = |s: &str| CString::new(s).map_err(|_| bad(format!("NUL in {s:?}")));
    let mut prepared = Vec::new();
    for m in mounts {
        let target = sys::cstr(&m.target).map_err(|e| bad(e.to_string()))?;
        let data = m.data.as_deref().map(c).transpose()?;
        prepared.push((c(&m.fstype)?, target, m.flags.bits(), data));
    }
    let sys_src = c("/sys")?;
    let (err_r, err_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| bad(e.to_string()))?;
    // SAFETY: after fork only async-signal-safe system calls run in the
    // child and grandchild (every string was prepared above).
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(bad(format!("fork: {}", std::io::Error::last_os_error())));
    }
    if child == 0 {
        // SAFETY: raw system calls only; _exit never returns.
        unsafe {
            if libc::setns(pidfd.as_raw_fd(), libc::CLONE_NEWPID | libc::CLONE_NEWNET) != 0 {
                libc::_exit(2);
            }
            let grand = libc::fork();
            if grand == 0 {
                for (i, (fstype, target, flags, data)) in prepared.iter().enumerate() {
                    let d = data
                        .as_ref()
                        .map(|d| d.as_ptr())
                        .unwrap_or(std::ptr::null());
                    let r = libc::mount(
                        fstype.as_ptr(),
                        target.as_ptr(),
                        fstype.as_ptr(),
                        *flags,
                        d.cast(),
                    );
                    if r == 0 {
                        continue;
                    }
                    // A kernel that refuses a fresh sysfs gets the host's /sys
                    // bound read-only instead (it shows the host's devices).
                    if fstype.as_bytes() == b"sysfs" {
                        let bind = libc::MS_BIND | libc::MS_REC;
                        let ro = libc::MS_BIND
                            | libc::MS_REMOUNT
                            | libc::MS_RDONLY
                            | libc::MS_NOSUID
                            | libc::MS_NODEV
                            | libc::MS_NOEXEC;
                        if libc::mount(
                            sys_src.as_ptr(),
                            target.as_ptr(),
                            std::ptr::null(),
                            bind,
                            std::ptr::null(),
                        ) == 0
                            && libc::mount(
                                std::ptr::null(),
                                target.as_ptr(),
                                std::ptr::null(),
                                ro,
                                std::ptr::null(),
                            ) == 0
                        {
                            continue;
                        }
                    }
                    let code = [i as u8, *libc::__errno_location() as u8];
                    libc::write(err_w.as_raw_fd(), code.as_ptr().cast(), 2);
                    libc::_exit(1);
                }
                libc::_exit(0);
            }
            let mut st = 0;
            if grand < 0 || libc::waitpid(grand, &mut st, 0) != grand {
                libc::_exit(3);
            }
            libc::_exit(if libc::WIFEXITED(st) {
                libc::WEXITSTATUS(st)
            } else {
                4
            });
        }
    }
    drop(err_w);
    let mut st = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(child, &mut st, 0) };
    let mut code = [0u8; 2];
    let n = nix::unistd::read(&err_r, &mut code).unwrap_or(0);
    if libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0 {
        return Ok(());
    }
    if n == 2 {
        let m = &mounts[(code[0] as usize).min(mounts.len() - 1)];
        return Err(bad(format!(
            "mount {} on {}: {}",
            m.fstype,
            m.target.display(),
            std::io::Error::from_raw_os_error(code[1] as i32)
        )));
    }
    Err(bad(format!(
        "the helper in the VP's namespaces failed (wait status {st})"
    )))
}

/// Monitor side of the start, between clone and releasing the init: id
/// maps, the template and the overlay root.
/// Attach `layer` read-only at `at`, idmapped into `userns` if there is one.
fn attach_lower(layer: &Path, at: &Path, userns: Option<&OwnedFd>) -> Result<(), MonitorError> {
    let tree = sys::open_tree_clone(layer, false)
        .map_err(step(&format!("open_tree {}", layer.display())))?;
    let mut attrs = sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NODEV;
    if userns.is_some() {
        attrs |= sys::MOUNT_ATTR_IDMAP;
    }
    sys::mount_setattr(&tree, attrs, userns, false).map_err(|e| {
        if e.raw_os_error() == Some(libc::EINVAL) && userns.is_some() {
            MonitorError::Failed(format!(
                "idmapped mount of {} failed ({e}): its filesystem does not support idmapped mounts; \
                 put the state dir on ext4, xfs, btrfs or tmpfs (Linux 6.3+), or create the VP with --privileged",
                layer.display()
            ))
        } else {
            step(&format!("mount_setattr {}", layer.display()))(e)
        }
    })?;
    sys::move_mount(&tree, at).map_err(step("attach the template"))?;
    Ok(())
}

pub(super) fn prepare_vp(
    req: &MonitorRequest,
    pid: i32,
    lower: &Path,
    rootfs: &Path,
) -> Result<(), MonitorError> {
    let cfg = &req.config;
    let linux = cfg.runtime.linux().as_ref();
    let userns = if cfg.host_root_id().is_some() {
        for (file, maps) in [
            ("uid_map", linux.and_then(|l| l.uid_mappings().clone())),
            ("gid_map", linux.and_then(|l| l.gid_mappings().clone())),
        ] {
            let text: String = maps
                .unwrap_or_default()
                .iter()
                .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
                .collect();
            let path = format!("/proc/{pid}/{file}");
            std::fs::write(&path, text).map_err(step(&format!("write {path}")))?;
        }
        let ns: OwnedFd = std::fs::File::open(format!("/proc/{pid}/ns/user"))
            .map_err(step("open the VP's user namespace"))?
            .into();
        Some(ns)
    } else {
        None
    };

    // The template, read-only and (with a user namespace) idmapped so that
    // its root-owned files appear owned by VP root. One shared copy on disk.
    // An OCI container's layers are attached the same way, each one.
    let layers = match &cfg.cells.oci {
        Some(o) => o.layers.clone(),
        None => vec![req.template_rootfs.clone()],
    };
    let mut lowers = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let at = if i == 0 {
            lower.to_path_buf()
        } else {
            let p = req.run_dir.join(format!("lower{i}"));
            std::fs::create_dir_all(&p).map_err(step(&format!("mkdir {}", p.display())))?;
            p
        };
        attach_lower(layer, &at, userns.as_ref())?;
        lowers.push(at.display().to_string());
    }
    phase("template attached");

    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        req.upper.display(),
        req.work.display()
    );
    mount(
        Some("overlay"),
        rootfs,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(step("mount the VP's overlay root"))?;
    phase("overlay");

    Ok(())
}
