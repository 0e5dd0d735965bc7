//! Input: the host's input devices and injected input, multiplexed to the
//! foreground VP's own devices. See [`router`] for the routing rules,
//! [`sink`] for the VP devices (uinput, or the FIFO host backend).

pub mod evdev;
pub mod event;
pub mod inject;
pub mod keys;
pub mod mux;
pub mod router;
pub mod sink;
pub mod uinput;
