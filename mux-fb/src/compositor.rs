//! The compositor: shows the foreground VP's framebuffer on the panel.
//!
//! On a switch the whole frame of the new foreground is copied at once. In
//! between, every refresh (60 Hz) reads the foreground frame band by band
//! (rows into a cache-resident buffer), hashes each band and copies only the
//! bands whose hash changed, so an idle VP costs a read and hash pass and no
//! copy. [`Display`] runs a compositor on its own thread and
//! takes commands (attach, detach, switch, screenshot) through a channel.

use std::collections::HashMap;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use xxhash_rust::xxh3::xxh3_64;

use crate::geometry::Geometry;
use crate::panel::Panel;
use crate::vfb::VirtualFb;

/// Rows per band of change detection.
pub const BAND_ROWS: u32 = 16;
/// A band hash that no content has (practically): "compare and copy".
const UNKNOWN: u64 = 0x5eed_cafe_f00d_beef;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Refreshes run.
    pub refreshes: u64,
    /// Refreshes that copied anything.
    pub frames_shown: u64,
    pub bands_copied: u64,
    pub switches: u64,
    /// Time from the switch request to the new frame being on the panel.
    pub last_switch_us: u64,
    /// CPU time of the compositor thread.
    pub cpu_ns: u64,
}

pub struct Compositor {
    panel: Box<dyn Panel>,
    fg: Option<(String, Arc<VirtualFb>)>,
    hashes: Vec<u64>,
    /// One band of the foreground frame as just copied out of the VP's
    /// file: hashed while it is in the cache, and shown from here if it
    /// changed (cellsd never maps a VP's framebuffer).
    band: Vec<u8>,
    stats: Stats,
}

impl Compositor {
    pub fn new(panel: Box<dyn Panel>) -> Self {
        let bands = panel.geometry().height.div_ceil(BAND_ROWS) as usize;
        let size = panel.geometry().size();
        let band_len = BAND_ROWS as usize * panel.geometry().stride as usize;
        Self {
            panel,
            fg: None,
            hashes: vec![0; bands],
            band: vec![0; band_len.min(size)],
            stats: Stats::default(),
        }
    }

    pub fn geometry(&self) -> Geometry {
        self.panel.geometry()
    }

    pub fn panel(&self) -> &dyn Panel {
        &*self.panel
    }

    pub fn foreground(&self) -> Option<&str> {
        self.fg.as_ref().map(|(n, _)| n.as_str())
    }

    pub fn stats(&self) -> Stats {
        self.stats.clone()
    }

    fn band_range(&self, band: usize) -> std::ops::Range<usize> {
        let g = self.panel.geometry();
        let start = band * BAND_ROWS as usize * g.stride as usize;
        let end = (start + BAND_ROWS as usize * g.stride as usize).min(g.size());
        start..end
    }

    /// Show `fg` (None: a black panel) now: a full copy. `shown` is called
    /// as soon as the panel shows the new frame (before the bookkeeping).
    pub fn set_foreground(
        &mut self,
        fg: Option<(String, Arc<VirtualFb>)>,
        shown: impl FnOnce(&mut Stats),
    ) {
        self.fg = fg;
        self.stats.switches += 1;
        match &self.fg {
            Some((_, vfb)) => {
                // Straight from the VP's file onto the panel: one copy.
                vfb.read_into(self.panel.pixels_mut());
                shown(&mut self.stats);
                // Hashing is left to the next refresh (off the switch's
                // path); it finds every hash changed and copies the frame
                // once more. Hashing the copy here would read video memory
                // on a real panel, slow; hashing the source after the copy
                // could miss a draw made in between.
                self.hashes.fill(UNKNOWN);
            }
            None => {
                self.panel.pixels_mut().fill(0);
                shown(&mut self.stats);
                self.hashes.fill(0);
            }
        }
    }

    /// One refresh: copy the bands of the foreground frame that changed.
    /// Returns how many bands were copied.
    pub fn refresh(&mut self) -> usize {
        self.stats.refreshes += 1;
        let Some((_, vfb)) = &self.fg else {
            return 0;
        };
        // Band by band: each is read once from the VP's file into a buffer
        // that stays in the cache, hashed there and copied on only if it
        // changed (one pass over memory instead of a copy of the frame,
        // a hash pass and a copy).
        let vfb = Arc::clone(vfb);
        let mut copied = 0;
        for b in 0..self.hashes.len() {
            let r = self.band_range(b);
            let band = &mut self.band[..r.len()];
            vfb.read_at(r.start, band);
            let h = xxh3_64(band);
            if h != self.hashes[b] {
                self.hashes[b] = h;
                self.panel.pixels_mut()[r].copy_from_slice(band);
                copied += 1;
            }
        }
        if copied > 0 {
            self.stats.frames_shown += 1;
            self.stats.bands_copied += copied as u64;
        }
        copied
    }
}

/// What a screenshot shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Panel,
    Vp(String),
}

enum Command {
    Attach(String, Arc<VirtualFb>),
    Detach(String),
    Foreground(Option<String>, Instant),
    Capture(Target, mpsc::Sender<Option<Vec<u8>>>),
    Stats(mpsc::Sender<Stats>),
    Blank(bool),
}

/// A compositor on its own thread.
pub struct Display {
    tx: mpsc::Sender<Command>,
    geometry: Geometry,
    describe: String,
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Display {
    pub fn start(panel: Box<dyn Panel>) -> Self {
        let geometry = panel.geometry();
        let describe = panel.describe();
        let period = Duration::from_nanos(1_000_000_000 / panel.refresh_hz().max(1) as u64);
        let (tx, rx) = mpsc::channel::<Command>();
        let spawned = std::thread::Builder::new()
            .name("compositor".into())
            .spawn(move || {
                let mut comp = Compositor::new(panel);
                let mut screens: HashMap<String, Arc<VirtualFb>> = HashMap::new();
                let mut next = Instant::now() + period;
                loop {
                    let wait = next.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(wait) {
                        Ok(Command::Attach(name, vfb)) => {
                            let is_fg = comp.foreground() == Some(name.as_str());
                            screens.insert(name.clone(), Arc::clone(&vfb));
                            if is_fg {
                                comp.set_foreground(Some((name, vfb)), |_| {});
                            }
                        }
                        Ok(Command::Detach(name)) => {
                            screens.remove(&name);
                            if comp.foreground() == Some(name.as_str()) {
                                comp.set_foreground(None, |_| {});
                            }
                        }
                        Ok(Command::Foreground(name, asked)) => {
                            let fg = name.and_then(|n| screens.get(&n).map(|v| (n, Arc::clone(v))));
                            comp.set_foreground(fg, |st| {
                                st.last_switch_us = asked.elapsed().as_micros() as u64;
                            });
                        }
                        Ok(Command::Capture(target, reply)) => {
                            let px = match target {
                                Target::Panel => Some(comp.panel().pixels().to_vec()),
                                Target::Vp(n) => screens.get(&n).map(|v| v.frame()),
                            };
                            let _ = reply.send(px);
                        }
                        Ok(Command::Stats(reply)) => {
                            let mut s = comp.stats();
                            s.cpu_ns = thread_cpu_ns();
                            let _ = reply.send(s);
                        }
                        Ok(Command::Blank(b)) => {
                            let _ = comp.panel.set_blank(b);
                        }
                        Err(RecvTimeoutError::Timeout) => {
                            comp.refresh();
                            next += period;
                            let now = Instant::now();
                            if next < now {
                                // Fell behind (a stall): skip, do not burst.
                                next = now + period;
                            }
                        }
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            });
        if let Err(e) = spawned {
            // Without a thread there is no display; commands are then dropped.
            eprintln!("mux-fb: cannot start the compositor thread: {e}");
        }
        Self {
            tx,
            geometry,
            describe,
        }
    }

    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    pub fn describe(&self) -> &str {
        &self.describe
    }

    pub fn attach(&self, name: &str, vfb: Arc<VirtualFb>) {
        let _ = self.tx.send(Command::Attach(name.to_string(), vfb));
    }

    pub fn detach(&self, name: &str) {
        let _ = self.tx.send(Command::Detach(name.to_string()));
    }

    /// Show `name` (None: nothing) from now on; the switch happens at once
    /// on the compositor thread.
    pub fn set_foreground(&self, name: Option<&str>) {
        let _ = self
            .tx
            .send(Command::Foreground(name.map(String::from), Instant::now()));
    }

    pub fn set_blank(&self, blank: bool) {
        let _ = self.tx.send(Command::Blank(blank));
    }

    /// A copy of the panel's or a VP's pixels (None: no such VP). Commands
    /// are handled in order, so a capture after a switch shows the switch.
    pub fn capture(&self, target: Target) -> Option<Vec<u8>> {
        let (tx, rx) = mpsc::channel();
        self.tx.send(Command::Capture(target, tx)).ok()?;
        rx.recv().ok().flatten()
    }

    pub fn stats(&self) -> Stats {
        let (tx, rx) = mpsc::channel();
        if self.tx.send(Command::Stats(tx)).is_err() {
            return Stats::default();
        }
        rx.recv().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::draw::{fill, fill_rect};
    use crate::geometry::Rgb;
    use crate::panel::HeadlessPanel;

    fn vfb(name: &str, g: Geometry, color: Rgb) -> Arc<VirtualFb> {
        let p = std::env::temp_dir().join(format!("comp-{name}-{}", std::process::id()));
        let v = VirtualFb::create(&p, g).unwrap();
        let _ = std::fs::remove_file(&p); // the fd keeps the file
        paint(&v, |f| fill(f, &g, color));
        Arc::new(v)
    }

    /// Draw into a VP's file as the VP would.
    fn paint(v: &VirtualFb, draw: impl FnOnce(&mut [u8])) {
        let mut f = v.frame();
        draw(&mut f);
        v.write_frame(&f).unwrap();
    }

    #[test]
    fn switch_shows_the_new_frame_and_refresh_copies_only_changes() {
        let g = Geometry::new(64, 64);
        let mut c = Compositor::new(Box::new(HeadlessPanel::new(g)));
        let red = vfb("red", g, Rgb(0xff0000));
        let blue = vfb("blue", g, Rgb(0x0000ff));
        c.set_foreground(Some(("red".into(), Arc::clone(&red))), |_| {});
        assert_eq!(
            Rgb::read(c.panel().pixels(), g.offset(10, 10)),
            Rgb(0xff0000)
        );
        assert_eq!(
            c.refresh(),
            4,
            "the refresh after a switch learns the hashes (4 bands)"
        );
        assert_eq!(c.refresh(), 0, "nothing changed, nothing copied");
        // A background VP draws: the panel does not change.
        paint(&blue, |f| fill(f, &g, Rgb(0x000080)));
        assert_eq!(c.refresh(), 0);
        assert_eq!(
            Rgb::read(c.panel().pixels(), g.offset(10, 10)),
            Rgb(0xff0000)
        );
        // The foreground draws one row: one band is copied.
        paint(&red, |f| fill_rect(f, &g, 0, 20, 64, 1, Rgb(0x00ff00)));
        assert_eq!(c.refresh(), 1);
        assert_eq!(
            Rgb::read(c.panel().pixels(), g.offset(0, 20)),
            Rgb(0x00ff00)
        );
        // Switch: the whole new frame at once.
        c.set_foreground(Some(("blue".into(), Arc::clone(&blue))), |_| {});
        assert_eq!(
            Rgb::read(c.panel().pixels(), g.offset(0, 20)),
            Rgb(0x000080)
        );
        c.set_foreground(None, |_| {});
        assert_eq!(Rgb::read(c.panel().pixels(), g.offset(0, 20)), Rgb(0));
        assert_eq!(c.stats().switches, 3);
    }

    #[test]
    fn display_thread_orders_commands() {
        let g = Geometry::new(32, 32);
        let d = Display::start(Box::new(HeadlessPanel::new(g)));
        let a = vfb("a", g, Rgb(0x111111));
        let b = vfb("b", g, Rgb(0x222222));
        d.attach("a", a);
        d.attach("b", b);
        d.set_foreground(Some("b"));
        let px = d.capture(Target::Panel).unwrap();
        assert_eq!(Rgb::read(&px, 0), Rgb(0x222222));
        let px = d.capture(Target::Vp("a".into())).unwrap();
        assert_eq!(Rgb::read(&px, 0), Rgb(0x111111));
        assert!(d.capture(Target::Vp("nope".into())).is_none());
        d.detach("b");
        let px = d.capture(Target::Panel).unwrap();
        assert_eq!(
            Rgb::read(&px, 0),
            Rgb(0),
            "detached foreground leaves a black panel"
        );
        assert_eq!(d.stats().switches, 2);
    }
}
