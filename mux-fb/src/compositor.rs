//! The compositor: shows the foreground VP's framebuffer on the panel.
//!
//! On a switch the whole frame of the new foreground is copied at once. In
//! between, every refresh (60 Hz) reads the foreground frame band by band
//! (rows into a cache-resident buffer), hashes each band and copies only the
//! bands whose hash changed, so an idle VP costs a read and hash pass and no
//! copy. A band that changed in several refreshes in a row (an animation,
//! a video) is copied without hashing, and hashed again every few
//! refreshes to see whether it settled. [`Display`] refreshes a compositor
//! on a thread of its own; a switch, attach or screenshot runs on the
//! caller's thread under its lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use xxhash_rust::xxh3::xxh3_64;

use crate::geometry::Geometry;
use crate::panel::Panel;
use crate::vfb::VirtualFb;

/// Rows per band of change detection.
pub const BAND_ROWS: u32 = 16;
/// A band hash that no content has (practically): "compare and copy".
const UNKNOWN: u64 = 0x5eed_cafe_f00d_beef;
/// A band whose changes outnumber its unchanged refreshes by this many is
/// hot: copied straight from the VP's frame to the panel, without a hash
/// (an unchanged refresh among changed ones, as an app drawing at the
/// panel's rate without being in step with it gives, only counts one back)
/// ...
const HOT_AFTER: u8 = 3;
/// ... except every this many refreshes, when it is hashed again: unchanged
/// since the last of these, it is cold again (an idle band is cold within
/// two of these).
const RECHECK_EVERY: u64 = 8;

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
    /// Per band: changed refreshes less unchanged ones (while cold).
    streak: Vec<u8>,
    /// Per band: hot (copied without a hash).
    hot: Vec<bool>,
    /// One band of the foreground frame as just copied out of the VP's
    /// file: hashed while it is in the cache, and shown from here if it
    /// changed (cellsd never maps a VP's framebuffer).
    band: Vec<u8>,
    stats: Stats,
    /// Notices by VP name (e.g. a call ringing there): the first whose VP
    /// is not the foreground is drawn over the top of the panel.
    notices: Vec<(String, String)>,
    /// The notice on the panel now.
    shown: Option<String>,
}

/// Rows the notice banner takes at the top of the panel.
pub const NOTICE_ROWS: u32 = 4 * BAND_ROWS;
const NOTICE_BG: crate::geometry::Rgb = crate::geometry::Rgb(0x0d47a1);
const NOTICE_SCALE: u32 = 3;

impl Compositor {
    pub fn new(panel: Box<dyn Panel>) -> Self {
        let bands = panel.geometry().height.div_ceil(BAND_ROWS) as usize;
        let size = panel.geometry().size();
        let band_len = BAND_ROWS as usize * panel.geometry().stride as usize;
        Self {
            panel,
            fg: None,
            hashes: vec![0; bands],
            streak: vec![0; bands],
            hot: vec![false; bands],
            band: vec![0; band_len.min(size)],
            stats: Stats::default(),
            notices: Vec::new(),
            shown: None,
        }
    }

    fn notice_rows(&self) -> u32 {
        NOTICE_ROWS.min(self.panel.geometry().height)
    }

    /// Set the notices (VP name, text); the panel shows the first whose VP
    /// is not in front, over its top rows, until it goes.
    pub fn set_notices(&mut self, notices: Vec<(String, String)>) {
        self.notices = notices;
        self.update_notice();
    }

    /// The notice on the panel now.
    pub fn notice(&self) -> Option<&str> {
        self.shown.as_deref()
    }

    fn update_notice(&mut self) {
        let fg = self.foreground().map(str::to_string);
        let want = self
            .notices
            .iter()
            .find(|(vp, _)| Some(vp) != fg.as_ref())
            .map(|(_, t)| t.clone());
        if want == self.shown {
            return;
        }
        let g = self.panel.geometry();
        let rows = self.notice_rows();
        let len = (rows * g.stride) as usize;
        match &want {
            Some(t) => {
                let px = &mut self.panel.pixels_mut()[..len];
                let band = Geometry { height: rows, ..g };
                crate::draw::fill(px, &band, NOTICE_BG);
                let room = (g.width.saturating_sub(32)
                    / ((crate::font::GLYPH_W + 1) * NOTICE_SCALE))
                    as usize;
                let text: String = t.chars().take(room).collect();
                let y = rows.saturating_sub(crate::font::GLYPH_H * NOTICE_SCALE) / 2;
                crate::draw::text(
                    px,
                    &band,
                    16,
                    y,
                    &text,
                    NOTICE_SCALE,
                    crate::draw::contrast(NOTICE_BG),
                );
            }
            None => {
                // The foreground's rows again (or black), compared afresh
                // by the next refresh.
                match &self.fg {
                    Some((_, vfb)) => {
                        let vfb = Arc::clone(vfb);
                        vfb.read_at(0, &mut self.panel.pixels_mut()[..len]);
                    }
                    None => self.panel.pixels_mut()[..len].fill(0),
                }
                let bands = rows.div_ceil(BAND_ROWS) as usize;
                for h in self.hashes.iter_mut().take(bands) {
                    *h = UNKNOWN;
                }
            }
        }
        self.shown = want;
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
        self.streak.fill(0);
        self.hot.fill(false);
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
        // The frame covered the notice: drawn again if it still applies.
        self.shown = None;
        self.update_notice();
    }

    /// One refresh: copy the bands of the foreground frame that changed.
    /// Returns how many bands were copied.
    pub fn refresh(&mut self) -> usize {
        self.stats.refreshes += 1;
        let Some((_, vfb)) = &self.fg else {
            return 0;
        };
        let vfb = Arc::clone(vfb);
        let recheck = self.stats.refreshes.is_multiple_of(RECHECK_EVERY);
        let mut copied = 0;
        // The notice's rows are the notice's while it is shown.
        let first = if self.shown.is_some() {
            self.notice_rows().div_ceil(BAND_ROWS) as usize
        } else {
            0
        };
        for b in first..self.hashes.len() {
            let r = self.band_range(b);
            if self.hot[b] && !recheck {
                // Hot: it changes every refresh, a hash would only say so.
                vfb.read_at(r.start, &mut self.panel.pixels_mut()[r]);
                copied += 1;
                continue;
            }
            // Read once from the VP's file into a buffer that stays in the
            // cache, hashed there and copied on only if it changed (one
            // pass over memory instead of a copy of the frame, a hash pass
            // and a copy).
            let band = &mut self.band[..r.len()];
            vfb.read_at(r.start, band);
            let h = xxh3_64(band);
            let changed = h != self.hashes[b];
            if changed {
                self.hashes[b] = h;
                self.panel.pixels_mut()[r].copy_from_slice(band);
                copied += 1;
            }
            if self.hot[b] {
                // A recheck: still changing, or settled.
                self.hot[b] = changed;
                self.streak[b] = 0;
            } else if changed {
                self.streak[b] += 1;
                if self.streak[b] >= HOT_AFTER {
                    self.hot[b] = true;
                    self.streak[b] = 0;
                }
            } else {
                self.streak[b] = self.streak[b].saturating_sub(1);
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

/// The compositor and the VPs' framebuffers, shared by the refresh thread
/// and the callers.
struct Shared {
    comp: Compositor,
    screens: HashMap<String, Arc<VirtualFb>>,
}

/// A compositor refreshed by a thread of its own at the panel's rate. A
/// switch, an attach, a capture run on the caller's thread under the same
/// lock (a switch is then one copy away from the request, with no thread
/// to wake), so each sees every call made before it.
pub struct Display {
    shared: Arc<Mutex<Shared>>,
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

fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // The state stays consistent across a panic (each update is whole).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Display {
    pub fn start(panel: Box<dyn Panel>) -> Self {
        let geometry = panel.geometry();
        let describe = panel.describe();
        let period = Duration::from_nanos(1_000_000_000 / panel.refresh_hz().max(1) as u64);
        let shared = Arc::new(Mutex::new(Shared {
            comp: Compositor::new(panel),
            screens: HashMap::new(),
        }));
        let weak = Arc::downgrade(&shared);
        let spawned = std::thread::Builder::new()
            .name("compositor".into())
            .spawn(move || {
                let mut next = Instant::now() + period;
                loop {
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                    // The display is gone: so is the thread.
                    let Some(shared) = weak.upgrade() else { return };
                    {
                        let mut s = lock(&shared);
                        s.comp.refresh();
                        s.comp.stats.cpu_ns = thread_cpu_ns();
                    }
                    drop(shared);
                    next += period;
                    let now = Instant::now();
                    if next < now {
                        // Fell behind (a stall): skip, do not burst.
                        next = now + period;
                    }
                }
            });
        if let Err(e) = spawned {
            // Without the thread the panel shows switches but no refreshes.
            eprintln!("mux-fb: cannot start the compositor thread: {e}");
        }
        Self {
            shared,
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
        let mut s = lock(&self.shared);
        s.screens.insert(name.to_string(), Arc::clone(&vfb));
        if s.comp.foreground() == Some(name) {
            s.comp.set_foreground(Some((name.to_string(), vfb)), |_| {});
        }
    }

    pub fn detach(&self, name: &str) {
        let mut s = lock(&self.shared);
        s.screens.remove(name);
        if s.comp.foreground() == Some(name) {
            s.comp.set_foreground(None, |_| {});
        }
    }

    /// Show `name` (None: nothing) from now on: the new frame is on the
    /// panel when this returns.
    pub fn set_foreground(&self, name: Option<&str>) {
        let asked = Instant::now();
        let mut s = lock(&self.shared);
        let fg = name.and_then(|n| s.screens.get(n).map(|v| (n.to_string(), Arc::clone(v))));
        s.comp.set_foreground(fg, |st| {
            st.last_switch_us = asked.elapsed().as_micros() as u64;
        });
    }

    /// Notices by VP name ([`Compositor::set_notices`]).
    pub fn set_notices(&self, notices: Vec<(String, String)>) {
        lock(&self.shared).comp.set_notices(notices);
    }

    pub fn notice(&self) -> Option<String> {
        lock(&self.shared).comp.notice().map(str::to_string)
    }

    pub fn set_blank(&self, blank: bool) {
        let _ = lock(&self.shared).comp.panel.set_blank(blank);
    }

    /// A copy of the panel's or a VP's pixels (None: no such VP).
    pub fn capture(&self, target: Target) -> Option<Vec<u8>> {
        let s = lock(&self.shared);
        match target {
            Target::Panel => Some(s.comp.panel().pixels().to_vec()),
            Target::Vp(n) => s.screens.get(&n).map(|v| v.frame()),
        }
    }

    /// The counters; `cpu_ns` is the refresh thread's CPU time.
    pub fn stats(&self) -> Stats {
        lock(&self.shared).comp.stats()
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
    fn a_notice_shows_over_the_foreground_while_its_vp_is_behind() {
        let g = Geometry::new(128, 128);
        let mut c = Compositor::new(Box::new(HeadlessPanel::new(g)));
        let red = vfb("red", g, Rgb(0xff0000));
        let blue = vfb("blue", g, Rgb(0x0000ff));
        c.set_foreground(Some(("red".into(), Arc::clone(&red))), |_| {});
        c.refresh();
        let top = |c: &Compositor| Rgb::read(c.panel().pixels(), g.offset(2, 2));
        let below = |c: &Compositor| Rgb::read(c.panel().pixels(), g.offset(2, NOTICE_ROWS + 2));
        assert_eq!(top(&c), Rgb(0xff0000), "control: the frame");
        // A call rings in blue (behind): the banner, the rest is red's.
        c.set_notices(vec![("blue".into(), "CALL +1555".into())]);
        assert_eq!(top(&c), NOTICE_BG);
        assert_eq!(below(&c), Rgb(0xff0000));
        assert_eq!(c.notice(), Some("CALL +1555"));
        // Red draws everywhere: the banner stays, the rest changes.
        paint(&red, |f| fill(f, &g, Rgb(0x00ff00)));
        c.refresh();
        assert_eq!(top(&c), NOTICE_BG);
        assert_eq!(below(&c), Rgb(0x00ff00));
        // Blue comes in front: its own call, no banner.
        c.set_foreground(Some(("blue".into(), Arc::clone(&blue))), |_| {});
        assert_eq!(top(&c), Rgb(0x0000ff));
        assert_eq!(c.notice(), None);
        // Back to red: the banner again; the call ends: red's pixels.
        c.set_foreground(Some(("red".into(), Arc::clone(&red))), |_| {});
        assert_eq!(top(&c), NOTICE_BG);
        c.set_notices(Vec::new());
        assert_eq!(top(&c), Rgb(0x00ff00));
        assert_eq!(c.notice(), None);
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
    fn a_band_that_changes_every_refresh_is_copied_without_a_hash_until_it_settles() {
        let g = Geometry::new(64, 64);
        let mut c = Compositor::new(Box::new(HeadlessPanel::new(g)));
        let v = vfb("hot", g, Rgb(0x101010));
        c.set_foreground(Some(("hot".into(), Arc::clone(&v))), |_| {});
        c.refresh();
        // Band 1 (rows 16..32) animates: every refresh shows its new content.
        for i in 0..40u32 {
            paint(&v, |f| {
                fill_rect(f, &g, 0, 16, 64, 16, Rgb(0x000100 * (i + 1)))
            });
            let copied = c.refresh();
            assert_eq!(copied, 1, "refresh {i}: only the animated band");
            assert_eq!(
                Rgb::read(c.panel().pixels(), g.offset(5, 20)),
                Rgb(0x000100 * (i + 1)),
                "refresh {i} shows the latest frame"
            );
        }
        assert!(c.hot[1], "the band is hot");
        assert!(!c.hot[0] && !c.hot[2], "the still bands are not");
        // It stops: within two rechecks nothing is copied any more.
        for _ in 0..2 * RECHECK_EVERY {
            c.refresh();
        }
        assert!(!c.hot[1], "settled");
        assert_eq!(c.refresh(), 0);
    }

    #[test]
    fn a_band_drawn_out_of_step_with_the_refresh_still_gets_hot() {
        let g = Geometry::new(64, 64);
        let mut c = Compositor::new(Box::new(HeadlessPanel::new(g)));
        let v = vfb("jitter", g, Rgb(0x101010));
        c.set_foreground(Some(("jitter".into(), Arc::clone(&v))), |_| {});
        c.refresh();
        // Drawn in 2 of every 3 refreshes (the app and the panel run at
        // about the same rate, not in step).
        for i in 0..12u32 {
            if i % 3 != 2 {
                paint(&v, |f| {
                    fill_rect(f, &g, 0, 0, 64, 16, Rgb(0x000100 * (i + 1)))
                });
            }
            c.refresh();
            assert_eq!(
                Rgb::read(c.panel().pixels(), g.offset(5, 5)),
                Rgb(0x000100 * (i + 1 - u32::from(i % 3 == 2))),
            );
        }
        assert!(c.hot[0]);
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
