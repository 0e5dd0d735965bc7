//! uinput: a real evdev device per VP device (where /dev/uinput exists).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::event::*;
use super::router::DeviceKind;
use mux_fb::Geometry;

const UI_DEV_CREATE: libc::c_ulong = 0x5501;
const UI_DEV_SETUP: libc::c_ulong = 0x405c_5503;
const UI_ABS_SETUP: libc::c_ulong = 0x401c_5504;
const UI_SET_EVBIT: libc::c_ulong = 0x4004_5564;
const UI_SET_KEYBIT: libc::c_ulong = 0x4004_5565;
const UI_SET_ABSBIT: libc::c_ulong = 0x4004_5567;
const UI_SET_PROPBIT: libc::c_ulong = 0x4004_556e;
const INPUT_PROP_DIRECT: libc::c_int = 0x01;
const BUS_VIRTUAL: u16 = 0x06;

/// UI_GET_SYSNAME(len): _IOC(_IOC_READ, 'U', 44, len).
fn ui_get_sysname(len: usize) -> libc::c_ulong {
    (2 << 30) | ((len as libc::c_ulong) << 16) | (0x55 << 8) | 44
}

#[repr(C)]
struct InputId {
    bustype: u16,
    vendor: u16,
    product: u16,
    version: u16,
}

#[repr(C)]
struct UinputSetup {
    id: InputId,
    name: [u8; 80],
    ff_effects_max: u32,
}

#[repr(C)]
struct AbsInfo {
    value: i32,
    minimum: i32,
    maximum: i32,
    fuzz: i32,
    flat: i32,
    resolution: i32,
}

#[repr(C)]
struct UinputAbsSetup {
    code: u16,
    absinfo: AbsInfo,
}

fn ioctl_int(fd: &OwnedFd, req: libc::c_ulong, arg: libc::c_int) -> io::Result<()> {
    // SAFETY: these uinput ioctls take an int by value.
    if unsafe { libc::ioctl(fd.as_raw_fd(), req, arg) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Create a uinput device; returns its /dev/input/eventN node and the
/// uinput fd (events written there come out of the device).
pub fn create(kind: DeviceKind, name: &str, g: Geometry) -> io::Result<(PathBuf, OwnedFd)> {
    // SAFETY: open with a constant path; the fd is owned below.
    let raw = unsafe {
        libc::open(
            c"/dev/uinput".as_ptr(),
            libc::O_WRONLY | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    ioctl_int(&fd, UI_SET_EVBIT, EV_SYN as i32)?;
    ioctl_int(&fd, UI_SET_EVBIT, EV_KEY as i32)?;
    match kind {
        DeviceKind::Touch => {
            ioctl_int(&fd, UI_SET_EVBIT, EV_ABS as i32)?;
            ioctl_int(&fd, UI_SET_KEYBIT, BTN_TOUCH as i32)?;
            ioctl_int(&fd, UI_SET_KEYBIT, BTN_TOOL_FINGER as i32)?;
            ioctl_int(&fd, UI_SET_PROPBIT, INPUT_PROP_DIRECT)?;
            let w = g.width as i32 - 1;
            let h = g.height as i32 - 1;
            for (code, max) in [
                (ABS_X, w),
                (ABS_Y, h),
                (ABS_MT_SLOT, MAX_SLOTS as i32 - 1),
                (ABS_MT_TRACKING_ID, 0xffff),
                (ABS_MT_POSITION_X, w),
                (ABS_MT_POSITION_Y, h),
            ] {
                ioctl_int(&fd, UI_SET_ABSBIT, code as i32)?;
                let setup = UinputAbsSetup {
                    code,
                    absinfo: AbsInfo {
                        value: 0,
                        minimum: 0,
                        maximum: max,
                        fuzz: 0,
                        flat: 0,
                        resolution: 0,
                    },
                };
                // SAFETY: UI_ABS_SETUP reads a struct uinput_abs_setup.
                if unsafe { libc::ioctl(fd.as_raw_fd(), UI_ABS_SETUP, &setup) } < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        DeviceKind::Keys => {
            for code in 1..=KEY_MAX_USED {
                if !(0x100..0x160).contains(&code) {
                    ioctl_int(&fd, UI_SET_KEYBIT, code as i32)?;
                }
            }
        }
    }
    let mut setup = UinputSetup {
        id: InputId {
            bustype: BUS_VIRTUAL,
            vendor: 0xce11,
            product: 1,
            version: 1,
        },
        name: [0; 80],
        ff_effects_max: 0,
    };
    for (i, b) in name.bytes().take(79).enumerate() {
        setup.name[i] = b;
    }
    // SAFETY: UI_DEV_SETUP reads a struct uinput_setup; UI_DEV_CREATE takes no argument.
    unsafe {
        if libc::ioctl(fd.as_raw_fd(), UI_DEV_SETUP, &setup) < 0
            || libc::ioctl(fd.as_raw_fd(), UI_DEV_CREATE) < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    let mut sys = [0u8; 64];
    // SAFETY: UI_GET_SYSNAME writes at most the given length.
    if unsafe { libc::ioctl(fd.as_raw_fd(), ui_get_sysname(sys.len()), sys.as_mut_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let end = sys.iter().position(|b| *b == 0).unwrap_or(sys.len());
    let sysname = String::from_utf8_lossy(&sys[..end]).into_owned();
    // devtmpfs makes the node; wait for it briefly.
    let class = PathBuf::from(format!("/sys/devices/virtual/input/{sysname}"));
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let event = std::fs::read_dir(&class).ok().and_then(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().map(String::from))
                .find(|n| n.starts_with("event"))
        });
        if let Some(ev) = event {
            let node = PathBuf::from(format!("/dev/input/{ev}"));
            if node.exists() {
                return Ok((node, fd));
            }
        }
        if Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("uinput device {sysname} got no /dev/input node"),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_sizes() {
        assert_eq!(std::mem::size_of::<UinputSetup>(), 92);
        assert_eq!(std::mem::size_of::<UinputAbsSetup>(), 28);
        assert_eq!(ui_get_sysname(64), 0x8040_552c);
    }
}
