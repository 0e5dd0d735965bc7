//! mux-fb: the framebuffer multiplexer of cells.
//!
//! One *panel* (the physical display: a real fbdev device or, on hosts
//! without one, memory) and one *virtual framebuffer* per VP. The
//! [`compositor::Compositor`] shows the foreground VP's framebuffer on the
//! panel: on a switch at once, then at the panel's refresh rate, copying only
//! the parts of a frame that changed. Background VPs keep drawing into their
//! own framebuffers.
//!
//! Pixel format everywhere: XRGB8888, 32 bits per pixel, little endian
//! (bytes B, G, R, X), as the emulator's bochs fbdev and most phones' fbdev.
//!
//! Without the `host` feature only [`geometry`], [`draw`] and [`font`] are
//! built: what a program inside a VP (the persona app) needs; the `png`
//! feature adds [`screenshot`] (the VP's screencap).

pub mod draw;
pub mod fbabi;
pub mod font;
pub mod geometry;

#[cfg(feature = "host")]
pub mod compositor;
#[cfg(feature = "host")]
pub mod fbdev;
#[cfg(feature = "host")]
pub mod kernel;
#[cfg(feature = "host")]
pub mod panel;
#[cfg(feature = "png")]
pub mod screenshot;
#[cfg(feature = "host")]
pub mod shm;
#[cfg(feature = "host")]
pub mod vfb;

pub use geometry::Geometry;
