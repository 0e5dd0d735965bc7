//! Key names and text to key strokes: shared with the VP's `input` tool
//! ([`cells_templates::keymap`]), so `cellctl input key` and `adb shell
//! input keyevent` name keys alike.

pub use cells_templates::keymap::*;
