//! The Linux fbdev ABI (linux/fb.h): screen info structs and ioctl numbers.
//! Shared by the fbdev panel, the persona app (which asks its framebuffer for
//! its geometry) and, in C, the mux_fb kernel module.

pub const FBIOGET_VSCREENINFO: libc::c_ulong = 0x4600;
pub const FBIOPUT_VSCREENINFO: libc::c_ulong = 0x4601;
pub const FBIOGET_FSCREENINFO: libc::c_ulong = 0x4602;
pub const FBIOPAN_DISPLAY: libc::c_ulong = 0x4606;
pub const FBIOBLANK: libc::c_ulong = 0x4611;

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct FbBitfield {
    pub offset: u32,
    pub length: u32,
    pub msb_right: u32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct FbVarScreeninfo {
    pub xres: u32,
    pub yres: u32,
    pub xres_virtual: u32,
    pub yres_virtual: u32,
    pub xoffset: u32,
    pub yoffset: u32,
    pub bits_per_pixel: u32,
    pub grayscale: u32,
    pub red: FbBitfield,
    pub green: FbBitfield,
    pub blue: FbBitfield,
    pub transp: FbBitfield,
    pub nonstd: u32,
    pub activate: u32,
    pub height: u32,
    pub width: u32,
    pub accel_flags: u32,
    pub pixclock: u32,
    pub left_margin: u32,
    pub right_margin: u32,
    pub upper_margin: u32,
    pub lower_margin: u32,
    pub hsync_len: u32,
    pub vsync_len: u32,
    pub sync: u32,
    pub vmode: u32,
    pub rotate: u32,
    pub colorspace: u32,
    pub reserved: [u32; 4],
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct FbFixScreeninfo {
    pub id: [u8; 16],
    pub smem_start: libc::c_ulong,
    pub smem_len: u32,
    pub type_: u32,
    pub type_aux: u32,
    pub visual: u32,
    pub xpanstep: u16,
    pub ypanstep: u16,
    pub ywrapstep: u16,
    pub line_length: u32,
    pub mmio_start: libc::c_ulong,
    pub mmio_len: u32,
    pub accel: u32,
    pub capabilities: u16,
    pub reserved: [u16; 2],
}

/// Read both screen infos of an open fbdev device; None if it is not one
/// (for example the plain file of a userspace-mode virtual framebuffer).
pub fn screen_info(fd: libc::c_int) -> Option<(FbVarScreeninfo, FbFixScreeninfo)> {
    let mut var = FbVarScreeninfo::default();
    let mut fix = FbFixScreeninfo::default();
    // SAFETY: the ioctls fill structs of exactly these layouts.
    unsafe {
        if libc::ioctl(fd, FBIOGET_VSCREENINFO, &mut var) != 0 {
            return None;
        }
        if libc::ioctl(fd, FBIOGET_FSCREENINFO, &mut fix) != 0 {
            return None;
        }
    }
    Some((var, fix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_sizes_match_the_kernel_abi() {
        // x86_64 sizes of struct fb_var_screeninfo and fb_fix_screeninfo.
        assert_eq!(std::mem::size_of::<FbVarScreeninfo>(), 160);
        assert_eq!(std::mem::size_of::<FbFixScreeninfo>(), 80);
    }
}
