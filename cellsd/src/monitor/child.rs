//! The VP's init, from the clone to its exec: namespaces, mounts, pivot_root, credentials, seccomp.

use super::*;

/// The VP's init before exec: runs in the clone child, inside the new
/// namespaces (still in the monitor's mount namespace). Never returns.
pub(super) fn init_child(
    req: &MonitorRequest,
    go: OwnedFd,
    err: OwnedFd,
    seccomp: Option<&crate::seccomp::Filter>,
    fifo: Option<RawFd>,
) -> ! {
    let mut b = [0u8; 1];
    let run_dir = match sys::recv_fds(&go, &mut b, 1) {
        Ok((1, mut fds)) if fds.len() == 1 => fds.remove(0),
        // The monitor gave up (or died): leave quietly.
        // SAFETY: _exit is always safe.
        _ => unsafe { libc::_exit(1) },
    };
    let e = match setup_and_exec(req, run_dir, seccomp, fifo.map(|f| (f, &err))) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    if req.config.cells.oci.is_some() {
        // After "created" nobody reads the error pipe: the container's
        // stderr (containerd's log of it) says why.
        let msg = format!("cells-runtime: {e}\n");
        let _ = nix::unistd::write(std::io::stderr(), msg.as_bytes());
    }
    let _ = nix::unistd::write(&err, e.to_string().as_bytes());
    // SAFETY: _exit is always safe.
    unsafe { libc::_exit(127) }
}

pub(super) fn setup_and_exec(
    req: &MonitorRequest,
    run_dir: OwnedFd,
    seccomp: Option<&crate::seccomp::Filter>,
    fifo: Option<(RawFd, &OwnedFd)>,
) -> Result<std::convert::Infallible, MonitorError> {
    let cfg = &req.config;
    let joined = |kind: &str| {
        cfg.cells
            .oci
            .as_ref()
            .is_some_and(|o| o.join.iter().any(|j| j.kind == kind))
    };
    // Into the VP's run dir by fd (no path walk as VP ids); the new mount
    // namespace keeps the working directory, on its copy of the tree.
    nix::unistd::fchdir(&run_dir).map_err(step("fchdir to the VP's run dir"))?;
    drop(run_dir);
    nix::sched::unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWCGROUP)
        .map_err(step("unshare(mount, cgroup namespaces)"))?;
    // Every mount came from the monitor's (more privileged) namespace and
    // is locked here, so pivot_root refuses the root. A bind of it onto
    // itself is this namespace's own mount; what is mounted below it stays
    // locked (masks cannot be removed).
    mount(
        Some("rootfs"),
        "rootfs",
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(step("bind the VP's root onto itself"))?;
    // Onto that new mount (the lookup crosses it), while the file system
    // uid is still the monitor's: the run dir is root's alone (0700).
    std::env::set_current_dir("rootfs").map_err(step("chdir into the VP's root"))?;
    if cfg.host_root_id().is_some() {
        let root_g = Gid::from_raw(0);
        let root_u = Uid::from_raw(0);
        nix::unistd::setresgid(root_g, root_g, root_g).map_err(step("setresgid(0)"))?;
        nix::unistd::setgroups(&[]).map_err(step("setgroups"))?;
        nix::unistd::setresuid(root_u, root_u, root_u).map_err(step("setresuid(0)"))?;
    }
    rootfs::pivot(Path::new("."))?;
    phase("child: namespaces, pivot_root");
    // A joined UTS or network namespace is its owner's to set up.
    if !joined("uts") {
        nix::unistd::sethostname(cfg.hostname()).map_err(step("sethostname"))?;
    }
    if !joined("network") {
        loopback_up().map_err(step("bring up lo"))?;
    }
    if BinderRequest::of(&req.devices) == BinderRequest::Binderfs {
        rootfs::apply(Path::new("/"), &rootfs::binderfs_steps(), None, &mut |_| {
            Ok(())
        })?;
    }
    nix::unistd::setsid().map_err(step("setsid"))?;
    match OCI_STDIO.get().filter(|_| cfg.cells.oci.is_some()) {
        // An OCI container's stdio: what containerd's shim made for it.
        Some(fds) => {
            for (to, from) in fds.iter().enumerate() {
                // SAFETY: dup2 of the container's stdio onto 0, 1, 2.
                if unsafe { libc::dup2(*from, to as RawFd) } < 0 {
                    return Err(step("dup2 the container's stdio")(
                        std::io::Error::last_os_error(),
                    ));
                }
            }
        }
        None => {
            let console = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOCTTY)
                .open("/dev/console")
                .map_err(step("open /dev/console"))?;
            // SAFETY: dup2 of a valid fd onto 0, 1, 2.
            unsafe {
                for fd in 0..3 {
                    if libc::dup2(console.as_raw_fd(), fd) < 0 {
                        return Err(step("dup2 console")(std::io::Error::last_os_error()));
                    }
                }
            }
            drop(console);
        }
    }
    // Nothing of the keyring cellsd runs with is the VP's.
    sys::join_new_session_keyring().map_err(step("a session keyring of the VP's own"))?;
    restrict_bounding_set(&bounding_set(cfg)).map_err(step("drop capabilities"))?;
    sys::apply_vp_rlimits().map_err(step("the VP's resource limits"))?;
    if let Some(o) = &cfg.cells.oci {
        for r in &o.rlimits {
            sys::set_rlimit(&r.kind, r.soft, r.hard).map_err(step(&format!(
                "the container's {} ({}/{})",
                r.kind, r.soft, r.hard
            )))?;
        }
    }
    if req.ksm {
        const PR_SET_MEMORY_MERGE: libc::c_int = 67;
        // SAFETY: prctl with integer arguments. Failure (a kernel before
        // 6.4) only means the pages are not merged.
        unsafe { libc::prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0) };
    }
    let process = cfg
        .runtime
        .process()
        .as_ref()
        .ok_or("VP spec has no process")?;
    std::env::set_current_dir(process.cwd()).map_err(step("chdir"))?;
    cloexec_from(3);
    reset_signals();
    let args = process.args().clone().unwrap_or_default();
    let mut env = process.env().clone().unwrap_or_default();
    // The runtime's variables replace the definition's of the same name.
    for e in &req.extra_env {
        let key = e.split('=').next().unwrap_or("");
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(e.clone());
    }
    if let Some((fd, err)) = fifo {
        // Created: tell the monitor, then wait for `cells-runtime start`.
        nix::unistd::write(err, &[0u8]).map_err(step("report created"))?;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(format!("/proc/self/fd/{fd}"))
            .map_err(step("open the exec fifo"))?;
        nix::unistd::write(&f, b"0").map_err(step("write the exec fifo"))?;
    }
    // Last: the filter applies to the init's exec and everything after.
    if let Some(f) = seccomp {
        crate::seccomp::install(f)?;
    }
    // After the filter: installing one takes CAP_SYS_ADMIN, which another
    // user than VP root lacks (the filter allows these calls).
    if let Some(o) = &cfg.cells.oci {
        set_user(o).map_err(step("set the container's user"))?;
    }
    let e = exec_in_path(&args, &env);
    Err(step(&format!("exec {:?} in the VP", args.first()))(e))
}

/// An OCI container's user (uid, gid, additional groups), within the VP.
fn set_user(o: &crate::oci::OciSource) -> nix::Result<()> {
    if (o.uid, o.gid) == (0, 0) && o.additional_gids.is_empty() {
        return Ok(());
    }
    let groups: Vec<Gid> = o
        .additional_gids
        .iter()
        .map(|g| Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&groups)?;
    let g = Gid::from_raw(o.gid);
    nix::unistd::setresgid(g, g, g)?;
    let u = Uid::from_raw(o.uid);
    nix::unistd::setresuid(u, u, u)
}
