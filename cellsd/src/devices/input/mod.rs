//! Input: the host's input devices and injected input, multiplexed to the
//! foreground VP's own devices. See [`router`] for the routing rules,
//! [`sink`] and [`evdev_fs`] for the VP devices (evdev served by the VP's
//! monitor, or FIFOs).

pub mod evdev;
pub mod evdev_fs;
pub mod event;
pub mod inject;
pub mod keys;
pub mod mux;
pub mod router;
pub mod sink;
