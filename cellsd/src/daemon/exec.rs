//! Exec: commands run in a running VP (the exec helper), and its console.

use super::*;

impl Manager {
    /// Start a command in a running VP. It gets pipes made for it (or,
    /// with `tty`, a pty of the VP's own devpts); the caller gets their
    /// other ends: stdin (to write), stdout, stderr (to read), or the pty
    /// master. Returns the exec's id and those fds.
    pub async fn exec_start(
        self: &Arc<Self>,
        name: &str,
        args: Vec<String>,
        env: Vec<String>,
        cwd: String,
        tty: Option<Winsize>,
    ) -> Result<(u64, Vec<OwnedFd>), Error> {
        let req = self.exec_request(name, args, env, cwd, tty)?;
        // The command's pipes: the VP ends go to the helper, ours to the caller.
        let pipe = || {
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| failed("pipe")(e.into()))
        };
        let (vp_fds, caller_fds) = if tty.is_some() {
            (Vec::new(), Vec::new())
        } else {
            let (in_r, in_w) = pipe()?;
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            (vec![in_r, out_w, err_w], vec![in_w, out_r, err_r])
        };
        let (ours, helpers) =
            std::os::unix::net::UnixStream::pair().map_err(failed("socketpair"))?;
        let mut child = tokio::process::Command::new(&self.cfg.self_exe)
            .arg("__exec")
            .stdin(Stdio::from(OwnedFd::from(helpers)))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(failed("spawn the exec helper"))?;
        let vp = name.to_string();
        let reply = tokio::task::spawn_blocking(move || {
            let raw: Vec<i32> = vp_fds.iter().map(|f| f.as_raw_fd()).collect();
            crate::execer::send_message(&ours, &req, &raw)?;
            drop(vp_fds);
            let _ = ours.set_read_timeout(Some(EXEC_START_TIMEOUT));
            crate::execer::recv_message::<ExecReply>(&ours, 1)
        })
        .await
        .map_err(|e| Error::Failed(e.to_string()))?;
        let fds = match reply {
            Ok((ExecReply::Started, master)) if tty.is_none() || master.len() == 1 => {
                if tty.is_some() {
                    master
                } else {
                    caller_fds
                }
            }
            Ok((ExecReply::Failed { error }, _)) => {
                let _ = child.wait().await;
                return Err(Error::Failed(format!("exec in VP '{vp}': {error}")));
            }
            Ok((ExecReply::Started, _)) => {
                let _ = child.kill().await;
                return Err(Error::Failed("the exec helper sent no pty".into()));
            }
            Err(e) => {
                let _ = child.kill().await;
                return Err(Error::Failed(format!("exec in VP '{vp}': the helper: {e}")));
            }
        };
        let pid = child.id().unwrap_or(0) as i32;
        let id = self.next_exec.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(None);
        self.execs.lock().unwrap_or_else(|p| p.into_inner()).insert(
            id,
            ExecEntry {
                vp: name.to_string(),
                pid,
                status: rx,
            },
        );
        let mgr = Arc::clone(self);
        let vp_name = name.to_string();
        tokio::spawn(async move {
            let code = match child.wait().await {
                Ok(st) => st.code().unwrap_or_else(|| {
                    128 + std::os::unix::process::ExitStatusExt::signal(&st).unwrap_or(0)
                }),
                Err(_) => 125,
            };
            let _ = tx.send(Some(code));
            mgr.exec_ended(&vp_name);
            // Nobody asked for the status within a minute: forget it.
            tokio::time::sleep(Duration::from_secs(60)).await;
            mgr.execs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
        });
        Ok((id, fds))
    }

    /// What the exec helper is told to run (a running VP thaws for it).
    pub(super) fn exec_request(
        &self,
        name: &str,
        args: Vec<String>,
        env: Vec<String>,
        cwd: String,
        tty: Option<Winsize>,
    ) -> Result<ExecRequest, Error> {
        name::validate("VP", name)?;
        if args.is_empty() {
            return Err(Error::InvalidArgument(
                "no command given: `cellctl exec VP -- COMMAND [ARGS...]`".into(),
            ));
        }
        let (config, state) = {
            let inner = self.lock();
            let vp = inner.vps.get(name).ok_or_else(|| self.missing(name))?;
            match (&vp.run, vp.phase) {
                (Some(r), Phase::Running) => (vp.config.clone(), r.state.clone()),
                _ => return Err(Error::not_running(name)),
            }
        };
        // An exec is activity: a frozen VP thaws for it, and a VP running
        // one is not frozen by its policy.
        self.thaw_for_exec(name)?;
        let mut full_env = config
            .runtime
            .process()
            .as_ref()
            .and_then(|p| p.env().clone())
            .unwrap_or_default();
        for e in self.runtime_env(&config).into_iter().chain(env) {
            let key = e.split('=').next().unwrap_or("").to_string();
            full_env.retain(|x| x.split('=').next() != Some(key.as_str()));
            full_env.push(e);
        }
        Ok(ExecRequest {
            vp: name.to_string(),
            init_pid: state.init_pid,
            init_start_time: state.init_start_time,
            userns: config.host_root_id().is_some(),
            cgroup: self.cgroup_of(&config),
            args,
            env: full_env,
            cwd: if cwd.is_empty() { "/".into() } else { cwd },
            bounding: bounding_set(&config),
            tty,
            seccomp: config.seccomp_filter()?,
            user: None,
        })
    }

    pub async fn exec_wait(&self, id: u64) -> Result<i32, Error> {
        let mut rx = {
            let execs = self.execs.lock().unwrap_or_else(|p| p.into_inner());
            execs
                .get(&id)
                .map(|e| e.status.clone())
                .ok_or_else(|| Error::InvalidArgument(format!("no exec with id {id}")))?
        };
        let code = rx
            .wait_for(|s| s.is_some())
            .await
            .map(|s| s.unwrap_or(125))
            .unwrap_or(125);
        self.execs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        Ok(code)
    }

    pub fn exec_signal(&self, id: u64, signal: i32) -> Result<(), Error> {
        if !(1..=64).contains(&signal) {
            return Err(Error::InvalidArgument(format!("invalid signal {signal}")));
        }
        let execs = self.execs.lock().unwrap_or_else(|p| p.into_inner());
        let e = execs
            .get(&id)
            .ok_or_else(|| Error::InvalidArgument(format!("no exec with id {id}")))?;
        if e.status.borrow().is_none() {
            // SAFETY: signalling the exec helper we spawned (still unreaped).
            unsafe { libc::kill(e.pid, signal) };
        }
        Ok(())
    }

    /// A reader of the VP's log: a SEQPACKET connection to its monitor's
    /// log.sock (the logger device's; logd's logdr protocol).
    pub fn log_open(&self, name: &str) -> Result<OwnedFd, Error> {
        name::validate("VP", name)?;
        {
            let inner = self.lock();
            let vp = inner.vps.get(name).ok_or_else(|| self.missing(name))?;
            if vp.phase != Phase::Running {
                return Err(Error::not_running(name));
            }
            if !vp.config.cells.devices.has(crate::devices::logger::NAME) {
                return Err(Error::InvalidArgument(format!(
                    "VP '{name}' has no logger device (it was created with --device logger=none)"
                )));
            }
        }
        let path = self
            .cfg
            .layout
            .vp_run_dir(name)
            .join(crate::devices::logger::HOST_SOCKET);
        let fd = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::SeqPacket,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| failed("a socket for the VP's log")(e.into()))?;
        let addr = nix::sys::socket::UnixAddr::new(&path)
            .map_err(|e| failed("the VP's log socket")(e.into()))?;
        nix::sys::socket::connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr)
            .map_err(|e| failed("connect to the VP's log")(e.into()))?;
        Ok(fd)
    }

    /// A connection to the VP's console (a stream socket to its monitor).
    pub fn console(&self, name: &str) -> Result<OwnedFd, Error> {
        running_vp(&self.lock(), name)?;
        let s = std::os::unix::net::UnixStream::connect(self.cfg.layout.vp_console_socket(name))
            .map_err(failed("connect to the VP's console"))?;
        Ok(OwnedFd::from(s))
    }
}
