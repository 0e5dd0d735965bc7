//! Input routing: events reach only the foreground VP.
//!
//! Sources (grabbed evdev devices, injection) deliver normalized frames of
//! [`SourceEvent`]s. Every contact (a touch of a source's slot, or a key of
//! a source) belongs to the VP that was foreground when it went down, and its
//! later events go there only while that VP stays foreground. On a switch the
//! old foreground gets everything it still holds released (keys up, touches
//! lifted, SYN_REPORT) and the contacts become orphans: their remaining
//! events are dropped, so the new foreground never sees half a gesture.
//!
//! Output is per VP device: a multitouch (protocol B) touchscreen and a
//! keyboard, each frame ending with SYN_REPORT. Pure logic, unit-tested.

use std::collections::{BTreeSet, HashMap};

use super::event::*;

pub type VpId = String;

/// A touch contact: a source and its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContactId {
    pub source: u32,
    pub slot: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceEvent {
    TouchDown {
        contact: ContactId,
        x: i32,
        y: i32,
    },
    TouchMove {
        contact: ContactId,
        x: i32,
        y: i32,
    },
    TouchUp {
        contact: ContactId,
    },
    /// value: 0 up, 1 down, 2 autorepeat.
    Key {
        source: u32,
        code: u16,
        value: i32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Touch,
    Keys,
}

/// Events for one device of one VP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub vp: VpId,
    pub kind: DeviceKind,
    pub events: Vec<InputEvent>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Owner {
    Vp(VpId, usize),
    Orphan,
}

#[derive(Debug, Default)]
struct VpState {
    /// Per slot: tracking id and position of an active touch.
    slots: [Option<(i32, i32, i32)>; MAX_SLOTS],
    next_tracking_id: i32,
    touching: bool,
    pressed: BTreeSet<u16>,
}

#[derive(Debug, Default)]
pub struct Router {
    fg: Option<VpId>,
    vps: HashMap<VpId, VpState>,
    contacts: HashMap<ContactId, Owner>,
    keys: HashMap<(u32, u16), Owner>,
}

/// Builds one touchscreen frame.
struct TouchFrame(Vec<InputEvent>);

impl TouchFrame {
    fn slot(&mut self, s: usize) {
        self.0.push(InputEvent::new(EV_ABS, ABS_MT_SLOT, s as i32));
    }
    fn abs(&mut self, code: u16, v: i32) {
        self.0.push(InputEvent::new(EV_ABS, code, v));
    }
}

impl Router {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn foreground(&self) -> Option<&str> {
        self.fg.as_deref()
    }

    /// A VP's devices exist (it runs).
    pub fn attach(&mut self, vp: &str) {
        self.vps.entry(vp.to_string()).or_default();
    }

    /// The VP is gone: what it held is orphaned; input to it is dropped.
    pub fn detach(&mut self, vp: &str) {
        self.vps.remove(vp);
        self.orphan(vp);
        if self.fg.as_deref() == Some(vp) {
            self.fg = None;
        }
    }

    fn orphan(&mut self, vp: &str) {
        for o in self.contacts.values_mut().chain(self.keys.values_mut()) {
            if matches!(o, Owner::Vp(v, _) if v == vp) {
                *o = Owner::Orphan;
            }
        }
    }

    /// Make `vp` the foreground (None: nobody gets input). Returns the
    /// release frames for the old foreground.
    pub fn set_foreground(&mut self, vp: Option<&str>) -> Vec<Output> {
        if self.fg.as_deref() == vp {
            return Vec::new();
        }
        let mut out = Vec::new();
        if let Some(old) = self.fg.take() {
            if let Some(st) = self.vps.get_mut(&old) {
                let mut touch = TouchFrame(Vec::new());
                for (s, slot) in st.slots.iter_mut().enumerate() {
                    if slot.take().is_some() {
                        touch.slot(s);
                        touch.abs(ABS_MT_TRACKING_ID, -1);
                    }
                }
                if st.touching {
                    st.touching = false;
                    touch.0.push(InputEvent::new(EV_KEY, BTN_TOUCH, 0));
                    touch.0.push(InputEvent::new(EV_KEY, BTN_TOOL_FINGER, 0));
                }
                if !touch.0.is_empty() {
                    touch.0.push(InputEvent::syn());
                    out.push(Output {
                        vp: old.clone(),
                        kind: DeviceKind::Touch,
                        events: touch.0,
                    });
                }
                if !st.pressed.is_empty() {
                    let mut keys: Vec<InputEvent> = std::mem::take(&mut st.pressed)
                        .into_iter()
                        .map(|k| InputEvent::new(EV_KEY, k, 0))
                        .collect();
                    keys.push(InputEvent::syn());
                    out.push(Output {
                        vp: old.clone(),
                        kind: DeviceKind::Keys,
                        events: keys,
                    });
                }
            }
            self.orphan(&old);
        }
        self.fg = vp.filter(|v| self.vps.contains_key(*v)).map(String::from);
        out
    }

    /// Route one frame of a source.
    pub fn frame(&mut self, events: &[SourceEvent]) -> Vec<Output> {
        let fg = self.fg.clone();
        let mut touch = TouchFrame(Vec::new());
        let mut keys: Vec<InputEvent> = Vec::new();
        for ev in events {
            match *ev {
                SourceEvent::TouchDown { contact, x, y } => {
                    if let Some(Owner::Vp(..)) = self.contacts.get(&contact) {
                        // A second down without an up: treat it as a move.
                        self.touch_move(&fg, contact, x, y, &mut touch);
                        continue;
                    }
                    let owner = match fg
                        .as_ref()
                        .and_then(|v| self.vps.get_mut(v).map(|s| (v, s)))
                    {
                        Some((v, st)) => match st.slots.iter().position(Option::is_none) {
                            Some(s) => {
                                let id = st.next_tracking_id;
                                st.next_tracking_id = (id + 1) & 0xffff;
                                st.slots[s] = Some((id, x, y));
                                touch.slot(s);
                                touch.abs(ABS_MT_TRACKING_ID, id);
                                touch.abs(ABS_MT_POSITION_X, x);
                                touch.abs(ABS_MT_POSITION_Y, y);
                                Owner::Vp(v.clone(), s)
                            }
                            None => Owner::Orphan, // all slots busy
                        },
                        None => Owner::Orphan,
                    };
                    self.contacts.insert(contact, owner);
                }
                SourceEvent::TouchMove { contact, x, y } => {
                    self.touch_move(&fg, contact, x, y, &mut touch);
                }
                SourceEvent::TouchUp { contact } => {
                    if let Some(Owner::Vp(v, s)) = self.contacts.remove(&contact) {
                        if fg.as_ref() == Some(&v) {
                            if let Some(st) = self.vps.get_mut(&v) {
                                st.slots[s] = None;
                                touch.slot(s);
                                touch.abs(ABS_MT_TRACKING_ID, -1);
                            }
                        }
                    }
                }
                SourceEvent::Key {
                    source,
                    code,
                    value,
                } => {
                    let id = (source, code);
                    match value {
                        1 => {
                            let owner = match fg
                                .as_ref()
                                .and_then(|v| self.vps.get_mut(v).map(|s| (v, s)))
                            {
                                Some((v, st)) => {
                                    st.pressed.insert(code);
                                    keys.push(InputEvent::new(EV_KEY, code, 1));
                                    Owner::Vp(v.clone(), 0)
                                }
                                None => Owner::Orphan,
                            };
                            self.keys.insert(id, owner);
                        }
                        2 => {
                            if matches!(self.keys.get(&id), Some(Owner::Vp(v, _)) if fg.as_ref() == Some(v))
                            {
                                keys.push(InputEvent::new(EV_KEY, code, 2));
                            }
                        }
                        _ => {
                            if let Some(Owner::Vp(v, _)) = self.keys.remove(&id) {
                                if fg.as_ref() == Some(&v) {
                                    if let Some(st) = self.vps.get_mut(&v) {
                                        st.pressed.remove(&code);
                                    }
                                    keys.push(InputEvent::new(EV_KEY, code, 0));
                                }
                            }
                        }
                    }
                }
            }
        }
        let mut out = Vec::new();
        let Some(v) = fg else {
            return out;
        };
        if let Some(st) = self.vps.get_mut(&v) {
            let now_touching = st.slots.iter().any(Option::is_some);
            if now_touching != st.touching {
                st.touching = now_touching;
                touch
                    .0
                    .push(InputEvent::new(EV_KEY, BTN_TOUCH, now_touching as i32));
                touch.0.push(InputEvent::new(
                    EV_KEY,
                    BTN_TOOL_FINGER,
                    now_touching as i32,
                ));
            }
            if !touch.0.is_empty() {
                // Single-touch readers follow the first active contact.
                if let Some((_, x, y)) = st.slots.iter().flatten().next() {
                    touch.abs(ABS_X, *x);
                    touch.abs(ABS_Y, *y);
                }
                touch.0.push(InputEvent::syn());
                out.push(Output {
                    vp: v.clone(),
                    kind: DeviceKind::Touch,
                    events: touch.0,
                });
            }
        }
        if !keys.is_empty() {
            keys.push(InputEvent::syn());
            out.push(Output {
                vp: v,
                kind: DeviceKind::Keys,
                events: keys,
            });
        }
        out
    }

    fn touch_move(
        &mut self,
        fg: &Option<VpId>,
        contact: ContactId,
        x: i32,
        y: i32,
        touch: &mut TouchFrame,
    ) {
        if let Some(Owner::Vp(v, s)) = self.contacts.get(&contact) {
            if fg.as_ref() == Some(v) {
                if let Some(st) = self.vps.get_mut(v) {
                    if let Some(slot) = st.slots[*s].as_mut() {
                        slot.1 = x;
                        slot.2 = y;
                        touch.slot(*s);
                        touch.abs(ABS_MT_POSITION_X, x);
                        touch.abs(ABS_MT_POSITION_Y, y);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: ContactId = ContactId { source: 1, slot: 0 };

    fn codes(o: &Output) -> Vec<(u16, u16, i32)> {
        o.events
            .iter()
            .map(|e| (e.type_, e.code, e.value))
            .collect()
    }

    fn router(vps: &[&str], fg: &str) -> Router {
        let mut r = Router::new();
        for v in vps {
            r.attach(v);
        }
        r.set_foreground(Some(fg));
        r
    }

    #[test]
    fn a_tap_reaches_only_the_foreground() {
        let mut r = router(&["red", "green"], "green");
        let out = r.frame(&[SourceEvent::TouchDown {
            contact: C,
            x: 360,
            y: 640,
        }]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].vp, "green");
        assert_eq!(out[0].kind, DeviceKind::Touch);
        let ev = codes(&out[0]);
        assert!(ev.contains(&(EV_ABS, ABS_MT_TRACKING_ID, 0)));
        assert!(ev.contains(&(EV_ABS, ABS_MT_POSITION_X, 360)));
        assert!(ev.contains(&(EV_KEY, BTN_TOUCH, 1)));
        assert_eq!(*ev.last().unwrap(), (EV_SYN, SYN_REPORT, 0));
        let out = r.frame(&[SourceEvent::TouchUp { contact: C }]);
        let ev = codes(&out[0]);
        assert!(ev.contains(&(EV_ABS, ABS_MT_TRACKING_ID, -1)));
        assert!(ev.contains(&(EV_KEY, BTN_TOUCH, 0)));
    }

    #[test]
    fn a_held_key_is_released_in_the_old_foreground_on_a_switch() {
        let mut r = router(&["red", "green"], "red");
        let out = r.frame(&[SourceEvent::Key {
            source: 2,
            code: 172,
            value: 1,
        }]);
        assert_eq!(out[0].vp, "red");
        let rel = r.set_foreground(Some("green"));
        assert_eq!(rel.len(), 1);
        assert_eq!(rel[0].vp, "red");
        assert_eq!(
            codes(&rel[0]),
            vec![(EV_KEY, 172, 0), (EV_SYN, SYN_REPORT, 0)]
        );
        // Repeats and the real key-up go nowhere: green never saw the down.
        assert!(r
            .frame(&[SourceEvent::Key {
                source: 2,
                code: 172,
                value: 2
            }])
            .is_empty());
        assert!(r
            .frame(&[SourceEvent::Key {
                source: 2,
                code: 172,
                value: 0
            }])
            .is_empty());
        // A new press goes to green.
        let out = r.frame(&[SourceEvent::Key {
            source: 2,
            code: 172,
            value: 1,
        }]);
        assert_eq!(out[0].vp, "green");
    }

    #[test]
    fn a_touch_across_a_switch_is_lifted_and_never_reaches_the_new_foreground() {
        let mut r = router(&["red", "green"], "red");
        r.frame(&[SourceEvent::TouchDown {
            contact: C,
            x: 1,
            y: 1,
        }]);
        let rel = r.set_foreground(Some("green"));
        let ev = codes(&rel[0]);
        assert_eq!(rel[0].vp, "red");
        assert!(ev.contains(&(EV_ABS, ABS_MT_TRACKING_ID, -1)));
        assert!(ev.contains(&(EV_KEY, BTN_TOUCH, 0)));
        assert!(r
            .frame(&[SourceEvent::TouchMove {
                contact: C,
                x: 5,
                y: 5
            }])
            .is_empty());
        assert!(r.frame(&[SourceEvent::TouchUp { contact: C }]).is_empty());
        // The next gesture is green's.
        let out = r.frame(&[SourceEvent::TouchDown {
            contact: C,
            x: 2,
            y: 2,
        }]);
        assert_eq!(out[0].vp, "green");
    }

    #[test]
    fn no_foreground_or_a_stopped_vp_drops_input() {
        let mut r = Router::new();
        assert!(r
            .frame(&[SourceEvent::TouchDown {
                contact: C,
                x: 1,
                y: 1
            }])
            .is_empty());
        r.attach("red");
        r.set_foreground(Some("red"));
        r.detach("red");
        assert_eq!(r.foreground(), None);
        assert!(r
            .frame(&[SourceEvent::Key {
                source: 0,
                code: 30,
                value: 1
            }])
            .is_empty());
        // A foreground that is not attached is refused.
        r.set_foreground(Some("ghost"));
        assert_eq!(r.foreground(), None);
    }

    #[test]
    fn multitouch_uses_separate_slots() {
        let mut r = router(&["red"], "red");
        let c2 = ContactId { source: 1, slot: 1 };
        let out = r.frame(&[
            SourceEvent::TouchDown {
                contact: C,
                x: 10,
                y: 10,
            },
            SourceEvent::TouchDown {
                contact: c2,
                x: 20,
                y: 20,
            },
        ]);
        let ev = codes(&out[0]);
        assert!(ev.contains(&(EV_ABS, ABS_MT_SLOT, 0)) && ev.contains(&(EV_ABS, ABS_MT_SLOT, 1)));
        assert!(ev.contains(&(EV_ABS, ABS_MT_TRACKING_ID, 1)));
        // Lifting one keeps BTN_TOUCH down.
        let out = r.frame(&[SourceEvent::TouchUp { contact: C }]);
        assert!(!codes(&out[0]).iter().any(|e| e.1 == BTN_TOUCH));
        let out = r.frame(&[SourceEvent::TouchMove {
            contact: c2,
            x: 25,
            y: 26,
        }]);
        let ev = codes(&out[0]);
        assert!(
            ev.contains(&(EV_ABS, ABS_MT_SLOT, 1)) && ev.contains(&(EV_ABS, ABS_MT_POSITION_Y, 26))
        );
        assert!(
            ev.contains(&(EV_ABS, ABS_X, 25)),
            "single-touch position follows"
        );
    }
}
