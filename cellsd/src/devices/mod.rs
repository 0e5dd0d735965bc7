//! A VP's devices. Each device is one module: [`display`] (the virtual
//! framebuffer), [`input`] (touchscreen and keys), [`binder`], [`power`] and
//! [`network`] (veth, bridge, address, port forwards), [`logger`],
//! [`sensors`], [`lights`], [`alarm`], [`audio`] and [`telephony`]. The VP's monitor
//! creates them before the VP starts (so they are in the VP's /dev from its
//! first instruction and survive a cellsd restart with the VP); cellsd takes
//! their open fds from the monitor (pidfd_getfd) and multiplexes the panel
//! and the host's input to the foreground VP.

pub mod alarm;
pub mod alsa;
pub mod audio;
pub mod binder;
pub mod display;
pub mod fusefs;
pub mod input;
pub mod lights;
pub mod logger;
pub mod model;
pub mod network;
pub mod power;
pub mod registry;
pub mod sensors;
pub mod telephony;
