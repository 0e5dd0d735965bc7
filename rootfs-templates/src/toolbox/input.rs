//! `input`: Android's input injector, writing into the VP's own input
//! devices (`/dev/input/event*`): a background VP's `input tap` reaches that
//! VP's apps only, never the panel's foreground VP.
//!
//! Touches are multitouch protocol B frames on the touchscreen in display
//! coordinates (scaled when `wm size` overrides the size); keys are Linux
//! key codes on the keys device, from Android's key codes and names
//! ([`crate::keymap`]); text is typed as key strokes (US layout).

use std::time::{Duration, Instant};

use super::evdev::*;
use super::wm;
use crate::keymap;

const USAGE: &str = "\
Usage: input [<source>] [-d DISPLAY_ID] <command> [<arg>...]

The sources are:
      dpad
      keyboard
      mouse
      touchpad
      gamepad
      touchnavigation
      joystick
      touchscreen
      stylus
      trackball

-d: specify the display ID.
      (Default: -1 for key event, 0 for motion event if not specified.)
The commands and default sources are:
      text <string> (Default: keyboard)
      keyevent [--longpress|--duration <duration to hold key down in ms>] [--doubletap] [--async] [--delay <duration between keycodes in ms>] <key code number or name> ... (Default: keyboard)
      tap <x> <y> (Default: touchscreen)
      swipe <x1> <y1> <x2> <y2> [duration(ms)] (Default: touchscreen)
      draganddrop <x1> <y1> <x2> <y2> [duration(ms)] (Default: touchscreen)
      press (Default: trackball)
      roll <dx> <dy> (Default: trackball)
      motionevent <DOWN|UP|MOVE|CANCEL> <x> <y> (Default: touchscreen)
      keycombination [-t duration(ms)] <key code 1> <key code 2> ... (Default: keyboard, the key order is important here.)
";

const SOURCES: &[&str] = &[
    "dpad",
    "keyboard",
    "mouse",
    "touchpad",
    "gamepad",
    "touchnavigation",
    "joystick",
    "touchscreen",
    "stylus",
    "trackball",
];

/// Android's long-press timeout (ViewConfiguration's default).
pub const LONG_PRESS: Duration = Duration::from_millis(500);
/// Time between two touch frames of a swipe (a 125 Hz touchscreen).
pub const MOVE_PERIOD: Duration = Duration::from_millis(8);
const DEFAULT_SWIPE_MS: u64 = 300;

#[derive(Debug)]
pub struct Error(pub String);

type R<T> = Result<T, Error>;

fn err<T>(m: impl Into<String>) -> R<T> {
    Err(Error(m.into()))
}

/// Maps display coordinates to the touchscreen's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale {
    pub display: (u32, u32),
    pub device: (i32, i32),
}

impl Scale {
    pub fn map(&self, x: f64, y: f64) -> (i32, i32) {
        let sx = self.device.0 as f64 / self.display.0.max(1) as f64;
        let sy = self.device.1 as f64 / self.display.1.max(1) as f64;
        let cx = ((x * sx).floor() as i32).clamp(0, self.device.0 - 1);
        let cy = ((y * sy).floor() as i32).clamp(0, self.device.1 - 1);
        (cx, cy)
    }
}

/// A touch frame: down (or move) at (x, y) in device coordinates, or up.
pub fn touch_frame(id: i32, at: Option<(i32, i32)>, first: bool) -> Vec<(u16, u16, i32)> {
    let mut f = vec![(EV_ABS, ABS_MT_SLOT, 0)];
    match at {
        Some((x, y)) => {
            if first {
                f.push((EV_ABS, ABS_MT_TRACKING_ID, id));
            }
            f.extend([
                (EV_ABS, ABS_MT_POSITION_X, x),
                (EV_ABS, ABS_MT_POSITION_Y, y),
            ]);
            if first {
                f.extend([(EV_KEY, BTN_TOUCH, 1), (EV_KEY, BTN_TOOL_FINGER, 1)]);
            }
            f.extend([(EV_ABS, ABS_X, x), (EV_ABS, ABS_Y, y)]);
        }
        None => f.extend([
            (EV_ABS, ABS_MT_TRACKING_ID, -1),
            (EV_KEY, BTN_TOUCH, 0),
            (EV_KEY, BTN_TOOL_FINGER, 0),
        ]),
    }
    f
}

/// Points of a swipe from a to b over `dur`, one per MOVE_PERIOD, ending at b.
pub fn swipe_points(a: (f64, f64), b: (f64, f64), dur: Duration) -> Vec<(f64, f64)> {
    let n = (dur.as_millis() / MOVE_PERIOD.as_millis()).max(1) as usize;
    (1..=n)
        .map(|i| {
            let t = i as f64 / n as f64;
            (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t)
        })
        .collect()
}

/// Android's `input text` escapes: `%s` is a space.
pub fn unescape_text(s: &str) -> String {
    s.replace("%s", " ")
}

/// The key strokes typing `text`: (Linux code, shift) per character.
pub fn text_keys(text: &str) -> R<Vec<(u16, bool)>> {
    text.chars()
        .map(|c| {
            keymap::char_key(c).ok_or_else(|| {
                Error(format!(
                    "cannot type {c:?}: the VP's keyboard is a US layout (ASCII letters, digits, punctuation, space, tab, newline)"
                ))
            })
        })
        .collect()
}

fn num(s: &str, what: &str) -> R<f64> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| Error(format!("bad {what} '{s}': give a number")))
}

struct Injector {
    input: VpInput,
    scale: Option<Scale>,
    next_id: i32,
}

impl Injector {
    fn new() -> Self {
        let input = find();
        let scale = input.touch.as_ref().map(|t| {
            let dev = (
                t.abs(ABS_MT_POSITION_X).map(|a| a.maximum + 1),
                t.abs(ABS_MT_POSITION_Y).map(|a| a.maximum + 1),
            );
            let disp = wm::load().ok();
            let phys = disp.as_ref().map(|d| d.physical);
            let device = match dev {
                (Some(w), Some(h)) => (w, h),
                _ => phys.map(|p| (p.w as i32, p.h as i32)).unwrap_or((1, 1)),
            };
            let display = disp
                .map(|d| (d.size().w, d.size().h))
                .unwrap_or((device.0 as u32, device.1 as u32));
            Scale { display, device }
        });
        Self {
            input,
            scale,
            next_id: (std::process::id() as i32 & 0x7fff) + 1,
        }
    }

    fn touch(&mut self) -> R<(&mut Device, Scale)> {
        match (self.input.touch.as_mut(), self.scale) {
            (Some(d), Some(s)) => Ok((d, s)),
            _ => err(format!(
                "the VP has no touchscreen in {} (its input device is off)",
                input_dir().display()
            )),
        }
    }

    fn keys(&mut self) -> R<&mut Device> {
        self.input.keys.as_mut().ok_or_else(|| {
            Error(format!(
                "the VP has no keys device in {} (its input device is off)",
                input_dir().display()
            ))
        })
    }

    fn frame_touch(&mut self, f: Vec<(u16, u16, i32)>) -> R<()> {
        let (d, _) = self.touch()?;
        d.write_frame(&f)
            .map_err(|e| Error(format!("writing to {}: {e}", d.path.display())))
    }

    fn key(&mut self, code: u16, value: i32) -> R<()> {
        let d = self.keys()?;
        d.write_frame(&[(EV_KEY, code, value)])
            .map_err(|e| Error(format!("writing to {}: {e}", d.path.display())))
    }

    fn down(&mut self, x: f64, y: f64) -> R<i32> {
        let (_, s) = self.touch()?;
        let id = self.next_id;
        self.next_id = self.next_id % 0xfffe + 1;
        self.frame_touch(touch_frame(id, Some(s.map(x, y)), true))?;
        Ok(id)
    }

    fn move_to(&mut self, id: i32, x: f64, y: f64) -> R<()> {
        let (_, s) = self.touch()?;
        self.frame_touch(touch_frame(id, Some(s.map(x, y)), false))
    }

    fn up(&mut self) -> R<()> {
        self.frame_touch(touch_frame(-1, None, false))
    }

    fn swipe(&mut self, a: (f64, f64), b: (f64, f64), dur: Duration, hold: Duration) -> R<()> {
        let id = self.down(a.0, a.1)?;
        std::thread::sleep(hold);
        let start = Instant::now();
        for (i, p) in swipe_points(a, b, dur).into_iter().enumerate() {
            let due = start + MOVE_PERIOD * (i as u32 + 1);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            self.move_to(id, p.0, p.1)?;
        }
        self.up()
    }

    fn stroke(&mut self, code: u16, hold: Duration) -> R<()> {
        self.key(code, 1)?;
        if !hold.is_zero() {
            std::thread::sleep(hold);
            // The autorepeat a held key produces.
            self.key(code, 2)?;
        }
        self.key(code, 0)
    }
}

fn keyevent(inj: &mut Injector, args: &[String]) -> R<()> {
    let mut hold = Duration::ZERO;
    let mut doubletap = false;
    let mut delay = Duration::ZERO;
    let mut codes = Vec::new();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--longpress" => hold = LONG_PRESS,
            "--doubletap" => doubletap = true,
            "--async" => {}
            "--duration" | "--delay" => {
                let ms = args
                    .get(i + 1)
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| Error(format!("{} needs milliseconds", args[i])))?;
                if args[i] == "--duration" {
                    hold = Duration::from_millis(ms);
                } else {
                    delay = Duration::from_millis(ms);
                }
                i += 1;
            }
            k => {
                let (n, name, linux) = keymap::android_key(k).ok_or_else(|| {
                    Error(format!("Unknown keycode: {k} (give an Android key code number or name, e.g. 3 or HOME or KEYCODE_HOME)"))
                })?;
                if linux == 0 {
                    return err(format!(
                        "KEYCODE_{name} ({n}) has no Linux key: no key of the VP's keys device produces it"
                    ));
                }
                codes.push(linux);
            }
        }
        i += 1;
    }
    if codes.is_empty() {
        return err("keyevent needs a key code");
    }
    for (n, c) in codes.iter().enumerate() {
        if n > 0 && !delay.is_zero() {
            std::thread::sleep(delay);
        }
        inj.stroke(*c, hold)?;
        if doubletap {
            inj.stroke(*c, hold)?;
        }
    }
    Ok(())
}

fn run_inner(args: &[String]) -> R<()> {
    let mut a: Vec<String> = args.to_vec();
    if a.first().is_some_and(|s| SOURCES.contains(&s.as_str())) {
        a.remove(0);
    }
    if a.first().map(String::as_str) == Some("-d") {
        let d = a.get(1).cloned().unwrap_or_default();
        if d != "0" && d != "-1" {
            return err(format!(
                "display {d} does not exist: a VP has display 0 only"
            ));
        }
        a.drain(..2.min(a.len()));
    }
    let Some(cmd) = a.first().cloned() else {
        return err(USAGE);
    };
    let rest = &a[1..];
    let mut inj = Injector::new();
    let xy = |i: usize| -> R<(f64, f64)> {
        match (rest.get(i), rest.get(i + 1)) {
            (Some(x), Some(y)) => Ok((num(x, "x")?, num(y, "y")?)),
            _ => err(format!("{cmd}: missing coordinates\n{USAGE}")),
        }
    };
    match cmd.as_str() {
        "tap" => {
            let (x, y) = xy(0)?;
            inj.down(x, y)?;
            inj.up()
        }
        "swipe" | "draganddrop" => {
            let (a0, b0) = (xy(0)?, xy(2)?);
            let ms = match rest.get(4) {
                Some(d) => d
                    .parse::<i64>()
                    .map_err(|_| Error(format!("bad duration '{d}': give milliseconds")))?,
                None => -1,
            };
            let dur = Duration::from_millis(if ms < 0 { DEFAULT_SWIPE_MS } else { ms as u64 });
            let hold = if cmd == "draganddrop" {
                LONG_PRESS + Duration::from_millis(100)
            } else {
                Duration::ZERO
            };
            inj.swipe(a0, b0, dur, hold)
        }
        "motionevent" => {
            let action = rest
                .first()
                .map(|s| s.to_ascii_uppercase())
                .unwrap_or_default();
            match action.as_str() {
                "DOWN" => {
                    let (x, y) = xy(1)?;
                    inj.down(x, y).map(|_| ())
                }
                "MOVE" => {
                    let (x, y) = xy(1)?;
                    inj.move_to(-1, x, y)
                }
                "UP" | "CANCEL" => inj.up(),
                _ => err(format!(
                    "motionevent: give DOWN, UP, MOVE or CANCEL, not '{action}'"
                )),
            }
        }
        "keyevent" => keyevent(&mut inj, rest),
        "keycombination" => {
            let mut hold = Duration::ZERO;
            let mut keys = Vec::new();
            let mut i = 0;
            while i < rest.len() {
                if rest[i] == "-t" {
                    hold = Duration::from_millis(
                        rest.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or(0),
                    );
                    i += 2;
                    continue;
                }
                match keymap::android_key(&rest[i]) {
                    Some((_, _, l)) if l != 0 => keys.push(l),
                    _ => return err(format!("Unknown keycode: {}", rest[i])),
                }
                i += 1;
            }
            for k in &keys {
                inj.key(*k, 1)?;
            }
            std::thread::sleep(hold);
            for k in keys.iter().rev() {
                inj.key(*k, 0)?;
            }
            Ok(())
        }
        "text" => {
            let text = unescape_text(&rest.join(" "));
            for (code, shift) in text_keys(&text)? {
                if shift {
                    inj.key(keymap::KEY_LEFTSHIFT, 1)?;
                }
                inj.stroke(code, Duration::ZERO)?;
                if shift {
                    inj.key(keymap::KEY_LEFTSHIFT, 0)?;
                }
            }
            Ok(())
        }
        "press" => inj.stroke(353, Duration::ZERO),
        "roll" => err("roll: a VP has no trackball"),
        _ => err(format!("Error: Unknown command: {cmd}\n{USAGE}")),
    }
}

pub fn run(args: &[String]) -> i32 {
    match run_inner(args) {
        Ok(()) => 0,
        Err(Error(m)) => {
            eprintln!("{m}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tap_is_a_protocol_b_down_and_up() {
        let down = touch_frame(7, Some((100, 200)), true);
        assert_eq!(
            down,
            vec![
                (EV_ABS, ABS_MT_SLOT, 0),
                (EV_ABS, ABS_MT_TRACKING_ID, 7),
                (EV_ABS, ABS_MT_POSITION_X, 100),
                (EV_ABS, ABS_MT_POSITION_Y, 200),
                (EV_KEY, BTN_TOUCH, 1),
                (EV_KEY, BTN_TOOL_FINGER, 1),
                (EV_ABS, ABS_X, 100),
                (EV_ABS, ABS_Y, 200),
            ]
        );
        let up = touch_frame(-1, None, false);
        assert!(up.contains(&(EV_ABS, ABS_MT_TRACKING_ID, -1)));
        assert!(up.contains(&(EV_KEY, BTN_TOUCH, 0)));
    }

    #[test]
    fn override_sizes_scale_to_the_touchscreen() {
        let s = Scale {
            display: (360, 640),
            device: (720, 1280),
        };
        assert_eq!(s.map(180.0, 320.0), (360, 640));
        assert_eq!(s.map(9999.0, -5.0), (719, 0));
        let id = Scale {
            display: (720, 1280),
            device: (720, 1280),
        };
        assert_eq!(id.map(100.7, 200.0), (100, 200));
    }

    #[test]
    fn swipes_end_where_asked() {
        let p = swipe_points((0.0, 0.0), (100.0, 50.0), Duration::from_millis(80));
        assert_eq!(p.len(), 10);
        assert_eq!(p.last(), Some(&(100.0, 50.0)));
        assert_eq!(
            swipe_points((0.0, 0.0), (1.0, 1.0), Duration::ZERO).len(),
            1
        );
    }

    #[test]
    fn text_is_typed_on_a_us_keyboard() {
        assert_eq!(unescape_text("hello%sworld"), "hello world");
        let k = text_keys("Hi!").unwrap();
        assert_eq!(k, vec![(35, true), (23, false), (2, true)]);
        assert!(text_keys("é").unwrap_err().0.contains("US layout"));
    }
}
