/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * mux_fb: the control interface of the framebuffer multiplexer of cells.
 *
 * /dev/mux_fb (mode 0600, never given to a VP) takes these ioctls; every one
 * needs CAP_SYS_ADMIN in the initial user namespace, so only the root
 * namespace can make VP framebuffers or change the foreground.
 */
#ifndef _UAPI_MUX_FB_H
#define _UAPI_MUX_FB_H

#include <linux/ioctl.h>
#include <linux/types.h>

/* Make a VP framebuffer: returns its fb index N (/dev/fbN). */
#define MUXFB_IOC_CREATE	_IOR('M', 1, __u32)
/* Remove VP framebuffer N (its memory goes once nobody maps it). */
#define MUXFB_IOC_DESTROY	_IOW('M', 2, __u32)
/* Make VP framebuffer N the foreground (-1: none). */
#define MUXFB_IOC_SET_FG	_IOW('M', 3, __s32)
/* The foreground's fb index, or -1. */
#define MUXFB_IOC_GET_FG	_IOR('M', 4, __s32)

#endif
