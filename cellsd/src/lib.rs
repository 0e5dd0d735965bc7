//! cellsd: the cells daemon and its runtime library.
//!
//! Module map (see docs/ARCHITECTURE.md):
//! - [`name`], [`config`], [`layout`]: VP names, definitions, where things live;
//! - [`cgroup`], [`rootfs`], [`sys`]: the kernel mechanisms;
//! - [`monitor`], [`execer`]: the re-exec'd, single-threaded helpers that
//!   start a VP and run commands inside it;
//! - [`template`]: building template root filesystems; [`android_image`]:
//!   Android images (raw/sparse ext4, erofs) imported as templates;
//! - [`api`], [`daemon`], [`server`]: the D-Bus control API and the VP manager.

pub use cells_api as api;
pub mod android_image;
pub mod cgroup;
pub mod config;
pub mod criu;
pub mod daemon;
pub mod devices;
pub mod disk;
pub mod execer;
pub mod idshift;
pub mod layout;
pub mod monitor;
pub mod oci;
pub use cells_api::name;
pub mod rootfs;
pub mod seccomp;
pub mod server;
pub mod sys;
pub mod template;
pub mod trust;
pub mod vparchive;
pub mod web;
