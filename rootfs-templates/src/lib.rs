//! Programs installed into the rootfs templates. They run inside VPs whose
//! root has no C library, so they are linked statically (see .cargo/config.toml).
//!
//! - `cells-init`: the VP's pid 1 (`/init` -> `/system/bin/init`);
//! - `cells-prop`: `getprop` / `setprop` over the VP's property store ([`props`]).

pub mod adbkey;
pub mod evcodes;
pub mod fb;
pub mod keymap;
pub mod props;
pub mod services;
pub mod toolbox;
