//! A kernel ALSA PCM playback device driven through its ioctls (cellsd is
//! static: no alsa-lib), as tinyalsa does: the device's speaker for the
//! audio device's mix. S16_LE, 48 kHz, stereo, 10 ms periods, 4 of them.
//! Writes block while the device's buffer is full: the card's clock then
//! paces the mixer.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// `struct snd_interval` (the flag bits: openmin, openmax, integer, empty).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Interval {
    min: u32,
    max: u32,
    flags: u32,
}

/// `struct snd_pcm_hw_params` (x86_64 and every 64-bit ABI).
#[repr(C)]
#[derive(Clone, Copy)]
struct HwParams {
    flags: u32,
    masks: [[u32; 8]; 3],
    mres: [[u32; 8]; 5],
    intervals: [Interval; 12],
    ires: [Interval; 9],
    rmask: u32,
    cmask: u32,
    info: u32,
    msbits: u32,
    rate_num: u32,
    rate_den: u32,
    fifo_size: u64,
    reserved: [u8; 64],
}

/// `struct snd_xferi`.
#[repr(C)]
struct Xferi {
    result: i64,
    buf: *const libc::c_void,
    frames: u64,
}

const fn iowr(nr: u64, size: usize) -> u64 {
    (3 << 30) | ((size as u64) << 16) | ((b'A' as u64) << 8) | nr
}
const fn iow(nr: u64, size: usize) -> u64 {
    (1 << 30) | ((size as u64) << 16) | ((b'A' as u64) << 8) | nr
}
const fn io_(nr: u64) -> u64 {
    ((b'A' as u64) << 8) | nr
}

const HW_PARAMS: u64 = iowr(0x11, std::mem::size_of::<HwParams>());
const PREPARE: u64 = io_(0x40);
const DROP: u64 = io_(0x43);
const WRITEI_FRAMES: u64 = iow(0x50, std::mem::size_of::<Xferi>());

const ACCESS_RW_INTERLEAVED: u32 = 3;
const FORMAT_S16_LE: u32 = 2;
const PARAM_SAMPLE_BITS: usize = 8;
const PARAM_FRAME_BITS: usize = 9;
const PARAM_CHANNELS: usize = 10;
const PARAM_RATE: usize = 11;
const PARAM_PERIOD_SIZE: usize = 13;
const PARAM_PERIODS: usize = 15;
const INTERVAL_INTEGER: u32 = 1 << 2;

#[derive(Debug, thiserror::Error)]
pub enum AlsaError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The hw params cells asks of a playback device.
fn params(rate: u32, channels: u32, period: u32, periods: u32) -> HwParams {
    let open = Interval {
        min: 0,
        max: u32::MAX,
        flags: 0,
    };
    let exact = |v: u32| Interval {
        min: v,
        max: v,
        flags: INTERVAL_INTEGER,
    };
    let mut p = HwParams {
        flags: 0,
        masks: [[0; 8]; 3],
        mres: [[0; 8]; 5],
        intervals: [open; 12],
        ires: [Interval::default(); 9],
        rmask: u32::MAX,
        cmask: 0,
        info: 0,
        msbits: 0,
        rate_num: 0,
        rate_den: 0,
        fifo_size: 0,
        reserved: [0; 64],
    };
    p.masks[0][0] = 1 << ACCESS_RW_INTERLEAVED;
    p.masks[1][0] = 1 << FORMAT_S16_LE;
    p.masks[2][0] = 1; // SUBFORMAT_STD
    p.intervals[PARAM_SAMPLE_BITS - 8] = exact(16);
    p.intervals[PARAM_FRAME_BITS - 8] = exact(16 * channels);
    p.intervals[PARAM_CHANNELS - 8] = exact(channels);
    p.intervals[PARAM_RATE - 8] = exact(rate);
    p.intervals[PARAM_PERIOD_SIZE - 8] = exact(period);
    p.intervals[PARAM_PERIODS - 8] = exact(periods);
    p
}

pub struct Playback {
    fd: OwnedFd,
    path: PathBuf,
    channels: usize,
}

/// The first playback PCM device of the machine (`/dev/snd/pcmC*D*p`).
pub fn first_playback(dir: &Path) -> Option<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("pcmC") && n.ends_with('p'))
        })
        .collect();
    v.sort();
    v.into_iter().next()
}

impl Playback {
    pub fn open(
        path: &Path,
        rate: u32,
        channels: u32,
        period: u32,
        periods: u32,
    ) -> Result<Self, AlsaError> {
        let err = |what: &'static str| {
            let path = path.display().to_string();
            move |source: std::io::Error| AlsaError::Io { what, path, source }
        };
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(err("open"))?;
        let fd: OwnedFd = f.into();
        let mut p = params(rate, channels, period, periods);
        // SAFETY: HW_PARAMS reads and writes a struct snd_pcm_hw_params we own.
        if unsafe { libc::ioctl(fd.as_raw_fd(), HW_PARAMS as _, &mut p as *mut HwParams) } < 0 {
            return Err(err(
                "SNDRV_PCM_IOCTL_HW_PARAMS (S16_LE 48 kHz stereo, 480-frame periods × 8)",
            )(std::io::Error::last_os_error()));
        }
        // SAFETY: PREPARE takes no argument.
        if unsafe { libc::ioctl(fd.as_raw_fd(), PREPARE as _) } < 0 {
            return Err(err("SNDRV_PCM_IOCTL_PREPARE")(
                std::io::Error::last_os_error(),
            ));
        }
        Ok(Self {
            fd,
            path: path.to_path_buf(),
            channels: channels as usize,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write interleaved samples (whole frames); blocks while the device's
    /// buffer is full. An underrun (EPIPE) prepares the device again and
    /// writes on.
    pub fn write(&self, samples: &[i16]) -> std::io::Result<()> {
        let frames = samples.len() / self.channels;
        let mut done = 0;
        let mut retries = 0;
        while done < frames {
            let mut x = Xferi {
                result: 0,
                buf: samples[done * self.channels..].as_ptr().cast(),
                frames: (frames - done) as u64,
            };
            // SAFETY: x points into `samples`, which outlives the call, and
            // names no more frames than it holds.
            let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), WRITEI_FRAMES as _, &mut x) };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    // An underrun (the mixer was late): start again. A
                    // device that keeps failing is given up by the caller.
                    Some(libc::EPIPE) | Some(libc::ESTRPIPE) if retries < 8 => {
                        retries += 1;
                        // SAFETY: PREPARE takes no argument.
                        unsafe { libc::ioctl(self.fd.as_raw_fd(), PREPARE as _) };
                        continue;
                    }
                    Some(libc::EINTR) => continue,
                    _ => return Err(e),
                }
            }
            done += x.result.max(0) as usize;
            if x.result <= 0 {
                break;
            }
        }
        Ok(())
    }
}

impl Drop for Playback {
    fn drop(&mut self) {
        // SAFETY: DROP takes no argument.
        unsafe { libc::ioctl(self.fd.as_raw_fd(), DROP as _) };
    }
}

// ------------------------------------------------------------ the mixer

/// `struct snd_ctl_elem_id`.
#[repr(C)]
#[derive(Clone, Copy)]
struct ElemId {
    numid: u32,
    iface: i32,
    device: u32,
    subdevice: u32,
    name: [u8; 44],
    index: u32,
}

/// `struct snd_ctl_elem_list`.
#[repr(C)]
struct ElemList {
    offset: u32,
    space: u32,
    used: u32,
    count: u32,
    pids: *mut ElemId,
    reserved: [u8; 50],
}

/// `struct snd_ctl_elem_info` (the integer member of its value union).
#[repr(C)]
struct ElemInfo {
    id: ElemId,
    kind: i32,
    access: u32,
    count: u32,
    owner: i32,
    min: i64,
    max: i64,
    step: i64,
    value_rest: [u8; 128 - 24],
    dimen: [u16; 4],
    reserved: [u8; 56],
}

/// `struct snd_ctl_elem_value` (integer values).
#[repr(C)]
struct ElemValue {
    id: ElemId,
    indirect: u32,
    values: [i64; 128],
    tstamp: [i64; 2],
    reserved: [u8; 112],
}

const fn ctl_iowr(nr: u64, size: usize) -> u64 {
    (3 << 30) | ((size as u64) << 16) | ((b'U' as u64) << 8) | nr
}
const ELEM_LIST: u64 = ctl_iowr(0x10, std::mem::size_of::<ElemList>());
const ELEM_INFO: u64 = ctl_iowr(0x11, std::mem::size_of::<ElemInfo>());
const ELEM_WRITE: u64 = ctl_iowr(0x13, std::mem::size_of::<ElemValue>());
const ELEM_TYPE_BOOLEAN: i32 = 1;
const ELEM_TYPE_INTEGER: i32 = 2;

/// Turn on the card's playback switches and set its playback volumes to
/// their maximum (cards start muted: a phone's audio HAL sets its mixer
/// path; this is the whole path of a plain card). Returns the controls set.
pub fn unmute(control: &Path) -> std::io::Result<Vec<String>> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(control)?;
    let fd = f.as_raw_fd();
    let zero_id = ElemId {
        numid: 0,
        iface: 0,
        device: 0,
        subdevice: 0,
        name: [0; 44],
        index: 0,
    };
    let mut ids = vec![zero_id; 256];
    let mut list = ElemList {
        offset: 0,
        space: ids.len() as u32,
        used: 0,
        count: 0,
        pids: ids.as_mut_ptr(),
        reserved: [0; 50],
    };
    // SAFETY: ELEM_LIST fills at most `space` ids into the buffer we own.
    if unsafe { libc::ioctl(fd, ELEM_LIST as _, &mut list as *mut ElemList) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut set = Vec::new();
    for id in ids.iter().take(list.used as usize) {
        let name_len = id.name.iter().position(|b| *b == 0).unwrap_or(44);
        let name = String::from_utf8_lossy(&id.name[..name_len]).into_owned();
        if !name.contains("Playback") {
            continue;
        }
        // SAFETY: an all-zero ElemInfo is a valid value of plain integers.
        let mut info: ElemInfo = unsafe { std::mem::zeroed() };
        info.id = *id;
        // SAFETY: ELEM_INFO reads and writes the struct we own.
        if unsafe { libc::ioctl(fd, ELEM_INFO as _, &mut info as *mut ElemInfo) } < 0 {
            continue;
        }
        let v = match info.kind {
            ELEM_TYPE_BOOLEAN if name.ends_with("Switch") => 1,
            ELEM_TYPE_INTEGER if name.ends_with("Volume") => info.max,
            _ => continue,
        };
        // SAFETY: as above.
        let mut val: ElemValue = unsafe { std::mem::zeroed() };
        val.id = *id;
        for x in val.values.iter_mut().take(info.count.min(128) as usize) {
            *x = v;
        }
        // SAFETY: ELEM_WRITE reads the struct we own.
        if unsafe { libc::ioctl(fd, ELEM_WRITE as _, &mut val as *mut ElemValue) } >= 0 {
            set.push(name);
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The UAPI's sizes (the ioctl numbers encode them).
    #[test]
    fn structs_have_the_kernels_layout() {
        assert_eq!(std::mem::size_of::<HwParams>(), 608);
        assert_eq!(HW_PARAMS, 0xc260_4111);
        assert_eq!(WRITEI_FRAMES, 0x4018_4150);
        assert_eq!(PREPARE, 0x4140);
        assert_eq!(ELEM_LIST, 0xc050_5510);
        assert_eq!(ELEM_INFO, 0xc110_5511);
        assert_eq!(ELEM_WRITE, 0xc4c8_5513);
        let p = params(48_000, 2, 480, 4);
        assert_eq!(p.intervals[PARAM_RATE - 8].min, 48_000);
        assert_eq!(p.masks[1][0], 4);
    }
}
