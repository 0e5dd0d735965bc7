//! The foreground: switching, next/prev, and what acts on the panel (screenshots, input).

use super::*;

impl Manager {
    /// Change the foreground VP: the panel shows it at once, input goes to
    /// it (the old foreground gets what it held released), the run dir
    /// remembers it, clients get ForegroundChanged.
    pub(super) fn set_foreground(&self, inner: &mut Inner, fg: Option<String>) {
        let t0 = std::time::Instant::now();
        // A frozen VP thaws before it shows: within the switch.
        if let Some(n) = &fg {
            self.leave_background(inner, n);
        }
        let t_thaw = t0.elapsed();
        self.devices.switch(fg.as_deref());
        let t_devices = t0.elapsed();
        // After the panel and input moved: the weight is not on the path
        // from the request to the new frame.
        if let Some(n) = &fg {
            self.set_cpu_weight(inner, n, true);
        }
        if inner.foreground == fg {
            return;
        }
        self.writer.send(writer::Write::Foreground(
            self.cfg.layout.foreground_file(),
            fg.clone(),
        ));
        let old = std::mem::replace(&mut inner.foreground, fg.clone());
        if let Some(old) = old {
            self.enter_background(inner, &old);
        }
        tracing::info!(vp = fg.as_deref().unwrap_or(""), "foreground");
        self.emit(Event::Foreground(fg.unwrap_or_default()));
        tracing::debug!(
            thaw_us = t_thaw.as_micros() as u64,
            devices_us = (t_devices - t_thaw).as_micros() as u64,
            rest_us = (t0.elapsed() - t_devices).as_micros() as u64,
            "switch steps"
        );
    }
}

/// The running VPs, in name order.
pub(super) fn running_names(inner: &Inner) -> Vec<&str> {
    inner
        .vps
        .iter()
        .filter(|(_, v)| v.phase == Phase::Running)
        .map(|(n, _)| n.as_str())
        .collect()
}

/// Who takes the foreground when `after` stops ([`state::handoff`]).
pub(super) fn next_running(inner: &Inner, after: &str) -> Option<String> {
    state::handoff(&running_names(inner), after).map(String::from)
}

/// Touch positions are given in panel pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    pub x: i32,
    pub y: i32,
}

impl Manager {
    /// Make a running VP the foreground.
    pub fn switch(&self, name: &str) -> Result<(), Error> {
        name::validate("VP", name)?;
        let mut inner = self.lock();
        let vp = inner.vps.get(name).ok_or_else(|| self.missing(name))?;
        if vp.phase != Phase::Running {
            return Err(Error::NotRunning(format!(
                "VP '{name}' is not running, so it cannot be the foreground: start it with `cellctl start {name}`"
            )));
        }
        self.set_foreground(&mut inner, Some(name.to_string()));
        Ok(())
    }

    /// Switch to the next (or previous) running VP in name order; returns it.
    pub fn cycle(&self, forward: bool) -> Result<String, Error> {
        let mut inner = self.lock();
        let name = state::cycle(&running_names(&inner), inner.foreground.as_deref(), forward)
            .map(String::from)
            .ok_or_else(|| {
                Error::NotRunning("no VP is running: start one with `cellctl start VP`".into())
            })?;
        self.set_foreground(&mut inner, Some(name.clone()));
        Ok(name)
    }

    /// Wait until what switches left to write (foreground file, CPU
    /// weights) is written: before cellsd exits.
    pub fn flush_writes(&self) {
        self.writer.flush();
    }

    pub fn foreground(&self) -> Option<String> {
        self.lock().foreground.clone()
    }

    /// A PNG of the panel (`vp` None) or of a VP's own framebuffer.
    pub fn screenshot(&self, vp: Option<&str>) -> Result<Vec<u8>, Error> {
        let target = match vp {
            None => Target::Panel,
            Some(n) => {
                name::validate("VP", n)?;
                let inner = self.lock();
                let v = inner.vps.get(n).ok_or_else(|| self.missing(n))?;
                if v.phase != Phase::Running {
                    return Err(Error::not_running(n));
                }
                Target::Vp(n.to_string())
            }
        };
        let g = self.display.geometry();
        let px = self.display.capture(target).ok_or_else(|| {
            Error::Failed(format!(
                "VP '{}' has no framebuffer on this panel (see the cellsd log)",
                vp.unwrap_or("")
            ))
        })?;
        mux_fb::screenshot::encode_png(&px, &g).map_err(|e| Error::Failed(e.to_string()))
    }

    pub fn display_info(&self) -> (String, mux_fb::Geometry, mux_fb::compositor::Stats) {
        (
            self.display.describe(),
            self.display.geometry(),
            self.display.stats(),
        )
    }

    fn sensors_host(&self) -> Result<Arc<crate::devices::sensors::SensorsHost>, Error> {
        self.devices
            .get::<crate::devices::sensors::SensorsHost>()
            .ok_or_else(|| Error::Failed("the sensors device has no host side".into()))
    }

    pub fn sensor_set(&self, sensor: &str, values: &[f64]) -> Result<(), Error> {
        use crate::devices::sensors;
        match sensor {
            "accel" => {
                let a = sensors::check_accel(values).map_err(Error::InvalidArgument)?;
                self.sensors_host()?.set_accel(a);
                Ok(())
            }
            _ => Err(Error::InvalidArgument(format!(
                "no sensor named '{sensor}': the sensors are accel (and the location: `cellctl location set`)"
            ))),
        }
    }

    pub fn location_set(&self, lat: f64, lon: f64, alt: f64) -> Result<(), Error> {
        let loc = crate::devices::sensors::check_location(lat, lon, alt)
            .map_err(Error::InvalidArgument)?;
        self.sensors_host()?.set_location(loc);
        Ok(())
    }

    pub fn sensors(&self) -> Result<crate::api::SensorInfo, Error> {
        let h = self.sensors_host()?;
        let r = h.readings();
        Ok(crate::api::SensorInfo {
            accel: r.accel.map(|a| a.to_vec()).unwrap_or_default(),
            location: r.location.map(|l| l.to_vec()).unwrap_or_default(),
            active: h.active_vps(),
        })
    }

    /// The VPs' wake-up alarms and the host's alarm timers (JSON).
    pub fn alarms(&self) -> Result<String, Error> {
        let h = self
            .devices
            .get::<crate::devices::alarm::AlarmDevice>()
            .ok_or_else(|| Error::Failed("the alarm device has no host side".into()))?;
        serde_json::to_string(&h.0.report()).map_err(|e| Error::Failed(e.to_string()))
    }

    fn mixer(&self) -> Result<std::sync::Arc<crate::devices::audio::Mixer>, Error> {
        self.devices
            .get::<crate::devices::audio::AudioDevice>()
            .map(|d| std::sync::Arc::clone(&d.0))
            .ok_or_else(|| Error::Failed("the audio device has no host side".into()))
    }

    /// Who is heard and who records (JSON).
    pub fn audio(&self) -> Result<String, Error> {
        serde_json::to_string(&self.mixer()?.report()).map_err(|e| Error::Failed(e.to_string()))
    }

    /// The device's output for the next `ms` ms, as S16_LE 48 kHz stereo
    /// bytes (blocks that long: call it off the async runtime).
    pub fn audio_record(&self, ms: u32) -> Result<Vec<u8>, Error> {
        let s = self.mixer()?.record(ms).map_err(Error::InvalidArgument)?;
        Ok(cells_api::audio::to_bytes(&s))
    }

    /// Queue S16_LE 48 kHz stereo bytes as the device's microphone.
    pub fn audio_mic(&self, pcm: &[u8]) -> Result<(), Error> {
        if !pcm.len().is_multiple_of(crate::devices::audio::FRAME_BYTES) {
            return Err(Error::InvalidArgument(
                "the microphone takes whole S16_LE stereo frames (4 bytes each)".into(),
            ));
        }
        let s = cells_api::audio::from_bytes(pcm);
        self.mixer()?.feed_mic(&s).map_err(Error::InvalidArgument)
    }

    pub(super) fn switchboard(
        &self,
    ) -> Result<std::sync::Arc<crate::devices::telephony::Switchboard>, Error> {
        self.devices
            .get::<crate::devices::telephony::TelephonyDevice>()
            .map(|d| std::sync::Arc::clone(&d.0))
            .ok_or_else(|| Error::Failed("the telephony device has no host side".into()))
    }

    /// Numbers, calls, messages (JSON).
    pub fn phone(&self) -> Result<String, Error> {
        serde_json::to_string(&self.switchboard()?.report())
            .map_err(|e| Error::Failed(e.to_string()))
    }

    pub fn phone_number(&self, vp: &str, number: &str) -> Result<(), Error> {
        crate::name::validate("VP", vp)?;
        if !self.lock().vps.contains_key(vp) {
            return Err(Error::unknown_vp(vp));
        }
        self.switchboard()?
            .set_number(vp, number)
            .map_err(Error::InvalidArgument)
    }

    /// Give the cellular line to `vp`.
    pub fn phone_assign(&self, vp: &str) -> Result<(), Error> {
        crate::name::validate("VP", vp)?;
        if !self.lock().vps.contains_key(vp) {
            return Err(Error::unknown_vp(vp));
        }
        self.switchboard()?
            .assign(vp)
            .map_err(Error::InvalidArgument)
    }

    /// `what`: dial NUMBER, answer, hangup, or sms NUMBER TEXT, on the VP's
    /// behalf.
    pub fn phone_request(
        &self,
        vp: &str,
        r: crate::devices::telephony::modem::Request,
    ) -> Result<(), Error> {
        super::running_vp(&self.lock(), vp)?;
        self.switchboard()?
            .request(vp, r)
            .map_err(Error::InvalidArgument)
    }

    /// What the lights show and the last vibration (JSON).
    pub fn lights(&self) -> Result<String, Error> {
        let h = self
            .devices
            .get::<crate::devices::lights::LightsDevice>()
            .ok_or_else(|| Error::Failed("the lights device has no host side".into()))?;
        serde_json::to_string(&h.0.report()).map_err(|e| Error::Failed(e.to_string()))
    }

    pub fn input_stats(&self) -> crate::devices::input::mux::Stats {
        self.input.stats()
    }

    pub(super) fn check_point(&self, p: Point) -> Result<(), Error> {
        let g = self.display.geometry();
        if p.x < 0 || p.y < 0 || p.x >= g.width as i32 || p.y >= g.height as i32 {
            return Err(Error::InvalidArgument(format!(
                "({}, {}) is off the panel: x must be 0..{} and y 0..{}",
                p.x,
                p.y,
                g.width - 1,
                g.height - 1
            )));
        }
        Ok(())
    }

    /// A tap: touch down and up at one point. Goes to the foreground VP;
    /// with none (or a stopped one) it is dropped.
    pub async fn input_tap(&self, p: Point) -> Result<(), Error> {
        self.check_point(p)?;
        let contact = ContactId {
            source: INJECT_SOURCE,
            slot: 0,
        };
        self.input.inject(vec![SourceEvent::TouchDown {
            contact,
            x: p.x,
            y: p.y,
        }]);
        self.input.inject(vec![SourceEvent::TouchUp { contact }]);
        Ok(())
    }

    /// One touch step of a remote pointer (the web console): down, move
    /// or up at `p`, as contact 1 of the injection source.
    pub async fn input_touch(&self, action: &str, p: Point) -> Result<(), Error> {
        let contact = ContactId {
            source: INJECT_SOURCE,
            slot: 1,
        };
        let ev = match action {
            "down" => {
                self.check_point(p)?;
                SourceEvent::TouchDown {
                    contact,
                    x: p.x,
                    y: p.y,
                }
            }
            "move" => {
                self.check_point(p)?;
                SourceEvent::TouchMove {
                    contact,
                    x: p.x,
                    y: p.y,
                }
            }
            "up" => SourceEvent::TouchUp { contact },
            other => {
                return Err(Error::InvalidArgument(format!(
                    "unknown touch action '{other}': use down, move or up"
                )))
            }
        };
        self.input.inject(vec![ev]);
        Ok(())
    }

    /// The device's output from now on (the web console's sound); None
    /// without the audio device.
    pub fn audio_listen(&self) -> Option<std::sync::mpsc::Receiver<Vec<i16>>> {
        self.devices
            .get::<crate::devices::audio::AudioDevice>()
            .map(|a| a.0.listen())
    }

    /// The panel's geometry.
    pub fn panel_geometry(&self) -> mux_fb::Geometry {
        self.display.geometry()
    }

    /// The panel's pixels now (XRGB8888).
    pub fn panel_pixels(&self) -> Option<Vec<u8>> {
        self.display.capture(Target::Panel)
    }

    /// A running VP's own framebuffer now (None: no such VP or framebuffer).
    pub fn vp_pixels(&self, vp: &str) -> Option<Vec<u8>> {
        self.display.capture(Target::Vp(vp.to_string()))
    }

    /// A swipe from `a` to `b` over `ms` milliseconds (moves every ~8 ms).
    pub async fn input_swipe(&self, a: Point, b: Point, ms: u32) -> Result<(), Error> {
        self.check_point(a)?;
        self.check_point(b)?;
        if ms > 60_000 {
            return Err(Error::InvalidArgument(format!(
                "a swipe of {ms} ms is too long: give at most 60000"
            )));
        }
        let contact = ContactId {
            source: INJECT_SOURCE,
            slot: 0,
        };
        self.input.inject(vec![SourceEvent::TouchDown {
            contact,
            x: a.x,
            y: a.y,
        }]);
        let steps = (ms / 8).max(1);
        for i in 1..=steps {
            tokio::time::sleep(Duration::from_millis((ms / steps) as u64)).await;
            let x = a.x + (b.x - a.x) * i as i32 / steps as i32;
            let y = a.y + (b.y - a.y) * i as i32 / steps as i32;
            self.input
                .inject(vec![SourceEvent::TouchMove { contact, x, y }]);
        }
        self.input.inject(vec![SourceEvent::TouchUp { contact }]);
        Ok(())
    }

    /// A key: `action` is "press" (down and up), "down" or "up".
    pub async fn input_key(&self, key: &str, action: &str) -> Result<(), Error> {
        let code = keys::key_code(key).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "unknown key '{key}': use a letter, a digit or one of {}",
                keys::key_names().join(", ")
            ))
        })?;
        let ev = |value| {
            vec![SourceEvent::Key {
                source: INJECT_SOURCE,
                code,
                value,
            }]
        };
        match action {
            "press" => {
                self.input.inject(ev(1));
                self.input.inject(ev(0));
            }
            "down" => self.input.inject(ev(1)),
            "up" => self.input.inject(ev(0)),
            other => {
                return Err(Error::InvalidArgument(format!(
                    "unknown key action '{other}': use press, down or up"
                )))
            }
        }
        Ok(())
    }

    /// Type text as key strokes (US layout).
    pub async fn input_text(&self, text: &str) -> Result<(), Error> {
        let mut strokes = Vec::new();
        for c in text.chars() {
            let k = keys::char_key(c).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "cannot type {c:?}: text may hold printable ASCII, tabs and newlines"
                ))
            })?;
            strokes.push(k);
        }
        for (code, shift) in strokes {
            let key = |code, value| SourceEvent::Key {
                source: INJECT_SOURCE,
                code,
                value,
            };
            if shift {
                self.input.inject(vec![key(keys::KEY_LEFTSHIFT, 1)]);
            }
            self.input.inject(vec![key(code, 1)]);
            self.input.inject(vec![key(code, 0)]);
            if shift {
                self.input.inject(vec![key(keys::KEY_LEFTSHIFT, 0)]);
            }
        }
        Ok(())
    }
}
