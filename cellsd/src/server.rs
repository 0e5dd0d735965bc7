//! The D-Bus server: one peer-to-peer connection per client on
//! `<run>/cellsd.sock`, each serving `org.cells.Manager1` and receiving the
//! signals, and each authorized by its peer credentials (root, or a member of
//! the `cells` group if that group exists).

use std::collections::HashMap;
use std::sync::Arc;

use tokio::net::{UnixListener, UnixStream};
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{self, OwnedValue};

use crate::api::access::{authorize, cells_group, restrict_socket};
use crate::api::{CellsError, PowerInfo, TemplateInfo, VpInfo, OBJECT_PATH};
use crate::daemon::{create_options, Event, Manager, Point};

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub uid: u32,
    pub authorized: bool,
}

/// The interface object of one connection.
pub struct ManagerIface {
    mgr: Arc<Manager>,
    peer: Peer,
}

impl ManagerIface {
    fn check(&self) -> Result<(), CellsError> {
        if self.peer.authorized {
            Ok(())
        } else {
            Err(CellsError::AccessDenied(format!(
                "uid {} may not control cellsd: run cellctl as root{}",
                self.peer.uid,
                if cells_group().is_some() {
                    " or as a member of the 'cells' group"
                } else {
                    " (or create a 'cells' group and add the user to it)"
                }
            )))
        }
    }
}

impl ManagerIface {
    /// Root alone may `what` (an OCI container's process gets fds and
    /// paths the caller chose).
    fn check_root(&self, what: &str) -> Result<(), CellsError> {
        self.check()?;
        if self.peer.uid == 0 {
            Ok(())
        } else {
            Err(CellsError::AccessDenied(format!(
                "only root may {what} (uid {} asked): run cells-runtime as root",
                self.peer.uid
            )))
        }
    }
}

#[zbus::interface(name = "org.cells.Manager1")]
impl ManagerIface {
    /// The cellsd version.
    async fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_string()
    }

    /// Define a new VP. Options: template (s, required), hostname (s),
    /// memory (s, e.g. "512M"), cpus (s or d), pids (u), privileged (b).
    async fn create(
        &self,
        name: &str,
        options: HashMap<String, OwnedValue>,
    ) -> Result<(), CellsError> {
        self.check()?;
        let opts = create_options(&options)?;
        Ok(self.mgr.create(name, opts)?)
    }

    /// Create and start the VP of an OCI container (`cells-runtime create`;
    /// root only): `oci` is its [`crate::oci::OciSource`] (JSON), options as
    /// for Create (without template); the monitor is one the caller
    /// spawned (`cellsd __monitor --oci-stdio`): its stdin, its stdout and a
    /// pidfd of it. Returns once the container's init waits to be started.
    async fn oci_create(
        &self,
        name: &str,
        options: HashMap<String, OwnedValue>,
        oci: &str,
        monitor_in: zvariant::OwnedFd,
        monitor_out: zvariant::OwnedFd,
        monitor: zvariant::OwnedFd,
    ) -> Result<(), CellsError> {
        self.check_root("make a VP of an OCI bundle")?;
        let mut opts = crate::daemon::oci_options(&options)?;
        let source: crate::oci::OciSource = serde_json::from_str(oci)
            .map_err(|e| CellsError::InvalidArgument(format!("bad OCI source: {e}")))?;
        opts.oci = Some(source);
        Ok(self
            .mgr
            .oci_create(
                name,
                opts,
                monitor_in.into(),
                monitor_out.into(),
                monitor.into(),
            )
            .await?)
    }

    /// Run a process of an OCI container (`cells-runtime exec`; root only)
    /// through the exec helper the caller spawned (`helper`: the other end
    /// of its request socket) on the caller's three stdio fds, as `user`
    /// (uid, gid, groups) of the VP.
    #[allow(clippy::too_many_arguments)]
    async fn oci_exec(
        &self,
        name: &str,
        argv: Vec<String>,
        env: Vec<String>,
        cwd: &str,
        user: (u32, u32, Vec<u32>),
        helper: zvariant::OwnedFd,
        stdio: Vec<zvariant::OwnedFd>,
    ) -> Result<(), CellsError> {
        self.check_root("run a process of an OCI container")?;
        let stdio = stdio.into_iter().map(std::os::fd::OwnedFd::from).collect();
        Ok(self
            .mgr
            .oci_exec(
                name,
                crate::daemon::OciProcess {
                    args: argv,
                    env,
                    cwd: cwd.to_string(),
                    user: Some(user),
                },
                helper.into(),
                stdio,
            )
            .await?)
    }

    /// An OCI image as template `name`: its config (JSON) and its layers
    /// (files the caller opened, bottom first). Returns the build's id.
    async fn template_import_oci(
        &self,
        name: &str,
        config: String,
        layers: Vec<zvariant::OwnedFd>,
    ) -> Result<String, CellsError> {
        self.check()?;
        let layers = layers.into_iter().map(std::os::fd::OwnedFd::from).collect();
        Ok(self.mgr.template_import_oci(name, config, layers).await?)
    }

    /// Start a VP; returns once its init runs.
    async fn start(&self, name: &str) -> Result<(), CellsError> {
        self.check()?;
        Ok(self.mgr.start(name).await?)
    }

    /// Stop a VP: SIGTERM to its init, SIGKILL after timeout_secs (0 = default 10).
    async fn stop(&self, name: &str, timeout_secs: u32) -> Result<(), CellsError> {
        self.check()?;
        let t = if timeout_secs == 0 {
            crate::daemon::DEFAULT_STOP_TIMEOUT
        } else {
            timeout_secs
        };
        Ok(self.mgr.stop(name, t).await?)
    }

    /// Remove a stopped VP and all its files (writable layer, /data).
    async fn destroy(&self, name: &str) -> Result<(), CellsError> {
        self.check()?;
        Ok(self.mgr.destroy(name).await?)
    }

    async fn list(&self) -> Result<Vec<VpInfo>, CellsError> {
        self.check()?;
        Ok(self.mgr.list())
    }

    async fn status(&self, name: &str) -> Result<VpInfo, CellsError> {
        self.check()?;
        Ok(self.mgr.status(name)?)
    }

    /// Run argv inside a running VP. Without a tty it runs on pipes made
    /// for it and the reply carries their other ends (stdin to write,
    /// stdout and stderr to read); with `tty` it runs on a pty of the VP's
    /// own devpts (rows x cols) and the reply carries the master. The id is
    /// for ExecWait (the exit status) and ExecSignal.
    #[allow(clippy::too_many_arguments)]
    async fn exec_start(
        &self,
        name: &str,
        argv: Vec<String>,
        env: Vec<String>,
        cwd: &str,
        tty: bool,
        rows: u16,
        cols: u16,
    ) -> Result<(u64, Vec<zvariant::OwnedFd>), CellsError> {
        self.check()?;
        let ws = tty.then_some(crate::execer::Winsize { rows, cols });
        let (id, fds) = self
            .mgr
            .exec_start(name, argv, env, cwd.to_string(), ws)
            .await?;
        Ok((id, fds.into_iter().map(zvariant::OwnedFd::from).collect()))
    }

    async fn exec_wait(&self, id: u64) -> Result<i32, CellsError> {
        self.check()?;
        Ok(self.mgr.exec_wait(id).await?)
    }

    async fn exec_signal(&self, id: u64, signal: i32) -> Result<(), CellsError> {
        self.check()?;
        Ok(self.mgr.exec_signal(id, signal)?)
    }

    /// A stream socket attached to the VP's console.
    async fn console(&self, name: &str) -> Result<zvariant::OwnedFd, CellsError> {
        self.check()?;
        Ok(self.mgr.console(name)?.into())
    }

    /// A reader of a running VP's log (logd's logdr protocol).
    async fn log_open(&self, name: &str) -> Result<zvariant::OwnedFd, CellsError> {
        self.check()?;
        Ok(self.mgr.log_open(name)?.into())
    }

    /// Build a template from its recipe; returns the new build's id.
    async fn template_build(&self, name: &str) -> Result<String, CellsError> {
        self.check()?;
        Ok(self.mgr.template_build(name).await?)
    }

    /// Import Android images as a template: role ("system", "vendor",
    /// "product", "system_ext", "odm") -> an open file of the image (the
    /// caller opens it: cellsd reads no path for a caller). Returns the
    /// build's id; progress as TemplateBuildProgress.
    async fn template_import(
        &self,
        name: &str,
        images: HashMap<String, zvariant::OwnedFd>,
    ) -> Result<String, CellsError> {
        self.check()?;
        let images = images
            .into_iter()
            .map(|(r, fd)| (r, std::os::fd::OwnedFd::from(fd)))
            .collect();
        Ok(self.mgr.template_import(name, images).await?)
    }

    async fn template_list(&self) -> Result<Vec<TemplateInfo>, CellsError> {
        self.check()?;
        Ok(self.mgr.template_list())
    }

    /// The device's power state: who blocks suspend, every VP's wakelocks.
    /// Set a sensor's reading ("accel": X Y Z in m/s²): the VPs whose
    /// sensors run get it at once, the others when they start again.
    async fn sensor_set(&self, sensor: &str, values: Vec<f64>) -> Result<(), CellsError> {
        self.check()?;
        Ok(self.mgr.sensor_set(sensor, &values)?)
    }

    /// Set the location (degrees, metres) the VPs' GPS receivers report.
    async fn location_set(&self, lat: f64, lon: f64, alt: f64) -> Result<(), CellsError> {
        self.check()?;
        Ok(self.mgr.location_set(lat, lon, alt)?)
    }

    async fn alarms(&self) -> Result<String, CellsError> {
        self.check()?;
        Ok(self.mgr.alarms()?)
    }

    async fn lights(&self) -> Result<String, CellsError> {
        self.check()?;
        Ok(self.mgr.lights()?)
    }

    async fn phone(&self) -> Result<String, CellsError> {
        self.check()?;
        Ok(self.mgr.phone()?)
    }

    async fn phone_number(&self, vp: &str, number: &str) -> Result<(), CellsError> {
        self.check()?;
        Ok(self.mgr.phone_number(vp, number)?)
    }

    async fn phone_assign(&self, vp: &str) -> Result<(), CellsError> {
        self.check()?;
        Ok(self.mgr.phone_assign(vp)?)
    }

    /// `action`: dial (arg: the number), answer, hangup, sms (arg: the
    /// number, text: the message), on the VP's behalf.
    async fn phone_action(
        &self,
        vp: &str,
        action: &str,
        arg: &str,
        text: &str,
    ) -> Result<(), CellsError> {
        self.check()?;
        use crate::devices::telephony::modem::Request;
        let r = match action {
            "dial" => Request::Dial(
                crate::devices::telephony::check_number(arg)
                    .map_err(CellsError::InvalidArgument)?,
            ),
            "answer" => Request::Answer,
            "hangup" => Request::Hangup,
            "sms" => Request::Sms {
                to: crate::devices::telephony::check_number(arg)
                    .map_err(CellsError::InvalidArgument)?,
                text: text.to_string(),
            },
            other => {
                return Err(CellsError::InvalidArgument(format!(
                    "unknown phone action '{other}': use dial, answer, hangup or sms"
                )))
            }
        };
        Ok(self.mgr.phone_request(vp, r)?)
    }

    async fn audio(&self) -> Result<String, CellsError> {
        self.check()?;
        Ok(self.mgr.audio()?)
    }

    async fn audio_record(&self, ms: u32) -> Result<Vec<u8>, CellsError> {
        self.check()?;
        let mgr = std::sync::Arc::clone(&self.mgr);
        Ok(tokio::task::spawn_blocking(move || mgr.audio_record(ms))
            .await
            .map_err(|e| CellsError::Failed(e.to_string()))??)
    }

    async fn audio_mic(&self, pcm: Vec<u8>) -> Result<(), CellsError> {
        self.check()?;
        Ok(self.mgr.audio_mic(&pcm)?)
    }

    async fn sensors(&self) -> Result<crate::api::SensorInfo, CellsError> {
        self.check()?;
        Ok(self.mgr.sensors()?)
    }

    async fn power(&self) -> Result<PowerInfo, CellsError> {
        self.check()?;
        let (r, frozen) = self.mgr.power_report();
        Ok(PowerInfo {
            suspend_blocked: r.suspend_blocked,
            suspend_requested: r.suspend_requested,
            screen_on: r.screen_on,
            foreground: r.foreground,
            backend: r.backend,
            backend_error: r.backend_error,
            wakelocks: r.wakelocks.into_iter().collect(),
            blocked_by: r.blocked_by,
            frozen,
            ignored_requests: r.ignored_requests,
            last_request: r.last_request,
        })
    }

    /// One running VP's wakelocks.
    async fn wakelocks(&self, name: &str) -> Result<Vec<String>, CellsError> {
        self.check()?;
        Ok(self.mgr.wakelocks(name)?)
    }

    /// Freeze a background VP's processes; returns the microseconds it took.
    async fn freeze(&self, name: &str) -> Result<u64, CellsError> {
        self.check()?;
        Ok(self.mgr.freeze(name).await.map(|d| d.as_micros() as u64)?)
    }

    /// Thaw a frozen VP; returns the microseconds it took.
    async fn thaw(&self, name: &str) -> Result<u64, CellsError> {
        self.check()?;
        Ok(self.mgr.thaw(name).map(|d| d.as_micros() as u64)?)
    }

    /// The web console's URL with its token ("" when cellsd has no --web).
    async fn web(&self) -> Result<String, CellsError> {
        self.check()?;
        Ok(crate::web::URL.get().cloned().unwrap_or_default())
    }

    /// Write a stopped VP as an archive to `out` (an fd the caller opened);
    /// returns JSON {vp, bytes, data_bytes, disk_bytes}.
    /// `incremental`: only the blocks changed since the last export.
    async fn export(
        &self,
        name: &str,
        out: zvariant::OwnedFd,
        incremental: bool,
    ) -> Result<String, CellsError> {
        self.check()?;
        Ok(self
            .mgr
            .export(name, std::os::fd::OwnedFd::from(out), incremental, false)
            .await?)
    }

    /// Write a checkpointed (stopped) VP as an archive with its checkpoint
    /// to `out`, for a live move (`cellctl checkpoint VP -o FILE`);
    /// returns JSON {vp, bytes, data_bytes, disk_bytes}.
    async fn export_checkpoint(
        &self,
        name: &str,
        out: zvariant::OwnedFd,
    ) -> Result<String, CellsError> {
        self.check()?;
        Ok(self
            .mgr
            .export(name, std::os::fd::OwnedFd::from(out), false, true)
            .await?)
    }

    /// Make a VP of the archive read from `input` (named `name`, or as in
    /// the archive when empty); returns JSON {vp, warnings}.
    async fn import(
        &self,
        input: zvariant::OwnedFd,
        name: &str,
        any_build: bool,
    ) -> Result<String, CellsError> {
        self.check()?;
        let name = (!name.is_empty()).then(|| name.to_string());
        Ok(self
            .mgr
            .import(
                std::os::fd::OwnedFd::from(input),
                name,
                any_build,
                self.peer.uid == 0,
            )
            .await?)
    }

    /// Snapshot a VP's writable layer and /data (a running VP is paused for
    /// the copy); returns the snapshot's description (JSON).
    async fn snapshot(&self, name: &str, snapshot: &str) -> Result<String, CellsError> {
        self.check()?;
        let info = self.mgr.snapshot(name, snapshot).await?;
        Ok(serde_json::to_string(&info).unwrap_or_default())
    }

    /// A VP's snapshots, oldest first (JSON).
    async fn snapshots(&self, name: &str) -> Result<String, CellsError> {
        self.check()?;
        let list = self.mgr.snapshots(name)?;
        Ok(serde_json::to_string(&list).unwrap_or_default())
    }

    async fn snapshot_delete(&self, name: &str, snapshot: &str) -> Result<(), CellsError> {
        self.check()?;
        Ok(self.mgr.snapshot_delete(name, snapshot).await?)
    }

    /// Save a running VP's processes with CRIU (the VP ends unless
    /// `leave_running`); returns the checkpoint's manifest (JSON).
    async fn checkpoint(&self, name: &str, leave_running: bool) -> Result<String, CellsError> {
        self.check()?;
        let m = self.mgr.checkpoint(name, leave_running).await?;
        Ok(serde_json::to_string(&m).unwrap_or_default())
    }

    /// Bring a checkpointed VP back, its processes where they were.
    async fn restore(&self, name: &str) -> Result<String, CellsError> {
        self.check()?;
        let m = self.mgr.restore(name).await?;
        Ok(serde_json::to_string(&m).unwrap_or_default())
    }

    /// Put a stopped VP's writable layer and /data back to a snapshot.
    async fn rollback(&self, name: &str, snapshot: &str) -> Result<(), CellsError> {
        self.check()?;
        Ok(self.mgr.rollback(name, snapshot).await?)
    }

    /// Put a stopped VP back to its template (empty writable layer and /data).
    async fn reset(&self, name: &str) -> Result<(), CellsError> {
        self.check()?;
        Ok(self.mgr.reset(name).await?)
    }

    /// The serial to give `adb connect` for a VP (127.0.0.1:PORT, a stable
    /// host port forwarded to the VP's adbd on 5555).
    async fn adb(&self, name: &str) -> Result<String, CellsError> {
        self.check()?;
        Ok(self.mgr.adb_serial(name)?)
    }

    /// Let the holder of an adb key (an adbkey.pub line) into the VP's adbd.
    async fn adb_authorize(&self, name: &str, key: &str) -> Result<(), CellsError> {
        self.check()?;
        Ok(self.mgr.adb_authorize(name, key)?)
    }

    /// Take an adb key's access away ("" all keys); returns how many went.
    async fn adb_revoke(&self, name: &str, key: &str) -> Result<u32, CellsError> {
        self.check()?;
        Ok(self.mgr.adb_revoke(name, key)?)
    }

    /// The VP's authorized adb keys: (comment, the key's first characters).
    async fn adb_keys(&self, name: &str) -> Result<Vec<(String, String)>, CellsError> {
        self.check()?;
        Ok(self.mgr.adb_keys(name)?)
    }

    /// Forward host 127.0.0.1:HOST to the VP's port ("HOST:VP"); kept in
    /// the VP's definition; the host port is the VP's until it is destroyed,
    /// connections are relayed while it runs.
    async fn port_add(&self, name: &str, spec: &str) -> Result<(), CellsError> {
        self.check()?;
        Ok(self.mgr.port_add(name, spec).await.map(|_| ())?)
    }

    /// Change a stopped VP's network policy: isolated, shared-bridge or none.
    async fn set_network(&self, name: &str, policy: &str) -> Result<(), CellsError> {
        self.check()?;
        Ok(self.mgr.set_network(name, policy).await?)
    }

    async fn port_remove(&self, name: &str, host_port: u16) -> Result<(), CellsError> {
        self.check()?;
        Ok(self.mgr.port_remove(name, host_port).await?)
    }

    /// A VP's forwards: (host port, VP port, "adb" or "", listening now).
    async fn ports(&self, name: &str) -> Result<Vec<(u16, u16, String, bool)>, CellsError> {
        self.check()?;
        Ok(self
            .mgr
            .ports(name)?
            .into_iter()
            .map(|p| (p.host, p.vp, p.kind.to_string(), p.active))
            .collect())
    }

    /// Make a running VP the foreground: it gets the panel and the input.
    async fn switch(&self, name: &str) -> Result<(), CellsError> {
        self.check()?;
        Ok(self.mgr.switch(name)?)
    }

    /// Switch to the next running VP (name order, wrapping); returns it.
    async fn next(&self) -> Result<String, CellsError> {
        self.check()?;
        Ok(self.mgr.cycle(true)?)
    }

    /// Switch to the previous running VP; returns it.
    async fn prev(&self) -> Result<String, CellsError> {
        self.check()?;
        Ok(self.mgr.cycle(false)?)
    }

    /// The foreground VP ("" if none).
    async fn foreground(&self) -> Result<String, CellsError> {
        self.check()?;
        Ok(self.mgr.foreground().unwrap_or_default())
    }

    /// A PNG of what the panel shows (vp "") or of a VP's own framebuffer.
    async fn screenshot(&self, vp: &str) -> Result<Vec<u8>, CellsError> {
        self.check()?;
        // On the worker: a blocking-pool thread would get a malloc arena of
        // its own that keeps the frame's pages (the soak saw +2.9 MiB).
        Ok(self.mgr.screenshot((!vp.is_empty()).then_some(vp))?)
    }

    /// The panel: description, geometry and compositor counters.
    async fn display_info(&self) -> Result<HashMap<String, OwnedValue>, CellsError> {
        self.check()?;
        let (describe, g, st) = self.mgr.display_info();
        let inp = self.mgr.input_stats();
        let mut m: HashMap<String, OwnedValue> = HashMap::new();
        let mut put = |k: &str, v: zvariant::Value<'_>| {
            if let Ok(o) = v.try_to_owned() {
                m.insert(k.to_string(), o);
            }
        };
        put("panel", describe.as_str().into());
        put("width", g.width.into());
        put("height", g.height.into());
        put("stride", g.stride.into());
        put("refreshes", st.refreshes.into());
        put("frames_shown", st.frames_shown.into());
        put("bands_copied", st.bands_copied.into());
        put("switches", st.switches.into());
        put("last_switch_us", st.last_switch_us.into());
        put("compositor_cpu_ns", st.cpu_ns.into());
        put("input_frames_routed", inp.frames_routed.into());
        put("input_frames_dropped", inp.frames_dropped.into());
        let sources: Vec<String> = inp
            .sources
            .iter()
            .map(|(p, n)| format!("{p} ({n})"))
            .collect();
        put("input_sources", sources.into());
        Ok(m)
    }

    /// Tap at (x, y) in panel pixels: to the foreground VP (dropped if none).
    async fn input_tap(&self, x: i32, y: i32) -> Result<(), CellsError> {
        self.check()?;
        Ok(self.mgr.input_tap(Point { x, y }).await?)
    }

    /// Swipe from (x1, y1) to (x2, y2) over ms milliseconds.
    async fn input_swipe(
        &self,
        x1: i32,
        y1: i32,
        x2: i32,
        y2: i32,
        ms: u32,
    ) -> Result<(), CellsError> {
        self.check()?;
        Ok(self
            .mgr
            .input_swipe(Point { x: x1, y: y1 }, Point { x: x2, y: y2 }, ms)
            .await?)
    }

    /// A key by name (HOME, BACK, POWER, A ...); action press, down or up.
    async fn input_key(&self, key: &str, action: &str) -> Result<(), CellsError> {
        self.check()?;
        Ok(self.mgr.input_key(key, action).await?)
    }

    /// Type text (US layout).
    async fn input_text(&self, text: &str) -> Result<(), CellsError> {
        self.check()?;
        Ok(self.mgr.input_text(text).await?)
    }

    /// A VP changed state (a `VpState`): created, starting, running (started
    /// or thawed), frozen, stopping, stopped, destroyed.
    #[zbus(signal)]
    async fn vp_state_changed(
        emitter: &SignalEmitter<'_>,
        name: &str,
        state: &str,
    ) -> zbus::Result<()>;

    /// The foreground VP changed ("" for none).
    #[zbus(signal)]
    async fn foreground_changed(emitter: &SignalEmitter<'_>, name: &str) -> zbus::Result<()>;

    /// A call rings in a VP (in the background too): the VP, the caller's number.
    #[zbus(signal)]
    async fn incoming_call(emitter: &SignalEmitter<'_>, vp: &str, from: &str) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn template_build_progress(
        emitter: &SignalEmitter<'_>,
        template: &str,
        done: u64,
        total: u64,
        step: &str,
    ) -> zbus::Result<()>;
}

/// Stock D-Bus clients (gdbus, busctl with --address) treat any address as
/// a message bus and first call `org.freedesktop.DBus.Hello`. This answers
/// that and the match-rule calls, so they work on the peer-to-peer socket.
struct BusShim {
    unique_name: String,
}

#[zbus::interface(name = "org.freedesktop.DBus")]
impl BusShim {
    async fn hello(&self) -> String {
        self.unique_name.clone()
    }
    async fn add_match(&self, _rule: &str) {}
    async fn remove_match(&self, _rule: &str) {}
    async fn get_id(&self) -> String {
        zbus::Guid::generate().to_string()
    }
    /// Every name is owned by cellsd here; bus clients then match signals
    /// (sent from SERVER_NAME) to the name they asked for.
    async fn get_name_owner(&self, _name: &str) -> String {
        SERVER_NAME.to_string()
    }
    async fn name_has_owner(&self, _name: &str) -> bool {
        true
    }
}

/// cellsd's name on its peer-to-peer connections: `GetNameOwner` answers it
/// and it is the sender of cellsd's signals, so that bus-minded clients
/// (gdbus monitor, zbus proxies), which match signals by sender, accept them.
pub const SERVER_NAME: &str = ":1.0";

/// Bind the control socket: mode 0600, or 0660 with group `cells`.
pub fn bind(path: &std::path::Path) -> std::io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    restrict_socket(path)?;
    Ok(listener)
}

/// A signal of `org.cells.Manager1`, sent from SERVER_NAME (the interface's
/// own signal helpers send without a sender on peer-to-peer connections).
fn signal<B>(member: &str, body: &B) -> zbus::Result<zbus::Message>
where
    B: serde::Serialize + zvariant::DynamicType,
{
    zbus::Message::signal(OBJECT_PATH, crate::api::INTERFACE, member)?
        .sender(SERVER_NAME)?
        .build(body)
}

static NEXT_CLIENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Accept clients forever.
pub async fn serve(listener: UnixListener, mgr: Arc<Manager>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("accept: {e}");
                continue;
            }
        };
        let mgr = Arc::clone(&mgr);
        tokio::spawn(async move {
            if let Err(e) = handle(stream, mgr).await {
                tracing::debug!("client connection: {e}");
            }
        });
    }
}

async fn handle(stream: UnixStream, mgr: Arc<Manager>) -> zbus::Result<()> {
    let cred = stream
        .peer_cred()
        .map_err(|e| zbus::Error::Failure(e.to_string()))?;
    let peer = Peer {
        uid: cred.uid(),
        authorized: authorize(cred.uid(), cred.gid(), cred.pid()),
    };
    // Subscribe before serving so no event between the two is lost.
    let mut events = mgr.subscribe();
    let guid = zbus::Guid::generate();
    let conn = zbus::connection::Builder::unix_stream(stream)
        .server(guid)?
        .p2p()
        .serve_at(OBJECT_PATH, ManagerIface { mgr, peer })?
        .serve_at(
            "/org/freedesktop/DBus",
            BusShim {
                unique_name: format!(
                    ":1.{}",
                    NEXT_CLIENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                ),
            },
        )?
        .build()
        .await?;
    let closed = conn.closed();
    tokio::pin!(closed);
    loop {
        tokio::select! {
            ev = events.recv() => {
                if !peer.authorized {
                    continue;
                }
                let msg = match ev {
                    Ok(Event::VpState { name, state }) => signal("VpStateChanged", &(name, state)),
                    Ok(Event::TemplateProgress { template, done, total, step }) => {
                        signal("TemplateBuildProgress", &(template, done, total, step))
                    }
                    Ok(Event::TransferProgress { vp, done, total, step }) => {
                        signal("VpTransferProgress", &(vp, done, total, step))
                    }
                    Ok(Event::Foreground(name)) => signal("ForegroundChanged", &(name,)),
                    Ok(Event::IncomingCall(vp, from)) => signal("IncomingCall", &(vp, from)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return Ok(()),
                };
                let res = match msg {
                    Ok(m) => conn.send(&m).await,
                    Err(e) => Err(e),
                };
                if res.is_err() {
                    return Ok(()); // the client went away
                }
            }
            _ = &mut closed => return Ok(()),
        }
    }
}
