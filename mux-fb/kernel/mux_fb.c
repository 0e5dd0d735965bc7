// SPDX-License-Identifier: GPL-2.0
/*
 * mux_fb - per-VP framebuffer devices in front of the real one (cells).
 *
 * Each virtual phone (VP) gets its own fbdev device (/dev/fbN) with the
 * panel's mode. The foreground VP's device reaches the real framebuffer
 * directly: its mmap faults onto the real video memory (through the real
 * driver's own mapping code, so deferred I/O keeps working), read/write go
 * to the real device. A background VP's device reaches its own vmalloc'ed
 * backing buffer, so background VPs keep drawing without touching the panel.
 *
 * On a switch (MUXFB_IOC_SET_FG, root namespace only) the page-table
 * entries of both VPs' mappings are zapped, so their next access faults
 * onto the right memory; the screen is copied panel -> old foreground's
 * buffer and new foreground's buffer -> panel, as the Cells mux_fb did.
 *
 * A background VP's FBIOBLANK is recorded, never applied to the panel; it
 * is replayed when the VP becomes foreground. FBIOPUT_VSCREENINFO accepts
 * only the panel's mode. The module cannot be unloaded while a VP device is
 * open or mapped (fbdev holds a module reference per open file).
 */

#include <linux/fb.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/pfn_t.h>
#include <linux/rwsem.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>

#include "mux_fb_uapi.h"

static char *panel = "/dev/fb0";
module_param(panel, charp, 0444);
MODULE_PARM_DESC(panel, "the real framebuffer device (default /dev/fb0)");

#define MUXFB_MAX 16
#define MUXFB_MAPPINGS 4

struct muxfb_vp {
	struct fb_info *info;
	void *backing;			/* one frame, vzalloc'ed */
	bool blanked;			/* what the VP asked with FBIOBLANK */
	int blank_level;
	bool destroyed;
	/* address spaces through which the VP maps its device */
	struct address_space *mappings[MUXFB_MAPPINGS];
};

static struct {
	struct mutex lock;		/* create/destroy/switch */
	struct rw_semaphore switch_sem;	/* faults and I/O vs a switch */
	struct file *panel_file;
	struct fb_info *real;
	size_t size;			/* bytes of one frame */
	const struct vm_operations_struct *real_vm_ops;
	struct muxfb_vp *vps[MUXFB_MAX];
	struct muxfb_vp *fg;
	int panel_blank;
} mux;

static struct muxfb_vp *info_vp(struct fb_info *info)
{
	return *(struct muxfb_vp **)info->par;
}

static struct muxfb_vp *vma_vp(struct vm_area_struct *vma)
{
	struct fb_info *info = vma->vm_file->private_data;

	return info_vp(info);
}

/* The real framebuffer's memory as a kernel pointer (shadow or video memory). */
static void *real_screen(void)
{
	return (void __force *)mux.real->screen_base;
}

static bool real_is_iomem(void)
{
	return !(mux.real->flags & FBINFO_VIRTFB) && !is_vmalloc_addr(real_screen());
}

static void copy_from_panel(void *dst)
{
	if (real_is_iomem())
		memcpy_fromio(dst, mux.real->screen_base, mux.size);
	else
		memcpy(dst, real_screen(), mux.size);
}

/*
 * Have the real driver show the whole frame again. A shadow-buffered
 * (deferred I/O) driver only flushes what was damaged, and its drawing ops
 * report damage; it merges the rectangles it has not flushed yet into their
 * bounding box. Copying the top row and the bottom row onto themselves
 * thus marks the whole panel damaged for the cost of two rows.
 */
static void damage_panel(void)
{
	u32 w = mux.real->var.xres, h = mux.real->var.yres;
	struct fb_copyarea top = { .dx = 0, .dy = 0, .sx = 0, .sy = 0, .width = w, .height = 1 };
	struct fb_copyarea bottom = { .dx = 0, .dy = h - 1, .sx = 0, .sy = h - 1, .width = w, .height = 1 };

	if (mux.real->fbops->fb_copyarea) {
		mux.real->fbops->fb_copyarea(mux.real, &top);
		mux.real->fbops->fb_copyarea(mux.real, &bottom);
	}
}

/* Copy a frame to the panel and let the real driver show all of it. */
static void copy_to_panel(const void *src)
{
	if (real_is_iomem())
		memcpy_toio(mux.real->screen_base, src, mux.size);
	else
		memcpy(real_screen(), src, mux.size);
	damage_panel();
}

/* Drop every page-table entry of a VP's mappings: its next access faults. */
static void zap(struct muxfb_vp *vp)
{
	int i;

	for (i = 0; i < MUXFB_MAPPINGS && vp->mappings[i]; i++)
		unmap_mapping_range(vp->mappings[i], 0, 0, 1);
}

/* Pages of a vmalloc area whose ->mapping a fault set: clear them. */
static void clear_page_mappings(void *area, size_t size)
{
	size_t off;

	for (off = 0; off < size; off += PAGE_SIZE) {
		struct page *page = vmalloc_to_page(area + off);

		if (page)
			page->mapping = NULL;
	}
}

/* ---------------------------------------------------------------- mmap */

static vm_fault_t muxfb_fault(struct vm_fault *vmf)
{
	struct muxfb_vp *vp = vma_vp(vmf->vma);
	unsigned long off = vmf->pgoff << PAGE_SHIFT;
	struct page *page;
	vm_fault_t ret;

	if (off >= mux.size)
		return VM_FAULT_SIGBUS;
	down_read(&mux.switch_sem);
	if (vp == mux.fg && mux.real_vm_ops && mux.real_vm_ops->fault) {
		/* The real driver's fault: its memory, its dirty tracking. */
		ret = mux.real_vm_ops->fault(vmf);
		up_read(&mux.switch_sem);
		return ret;
	}
	if (vp == mux.fg) {
		/* A real framebuffer in video memory (no driver fault handler). */
		unsigned long pfn = (mux.real->fix.smem_start + off) >> PAGE_SHIFT;

		ret = vmf_insert_mixed(vmf->vma, vmf->address, pfn_to_pfn_t(pfn));
		up_read(&mux.switch_sem);
		return ret;
	}
	page = vmalloc_to_page(vp->backing + off);
	if (!page) {
		up_read(&mux.switch_sem);
		return VM_FAULT_SIGBUS;
	}
	if (!mux.real_vm_ops) {
		ret = vmf_insert_mixed(vmf->vma, vmf->address, pfn_to_pfn_t(page_to_pfn(page)));
		up_read(&mux.switch_sem);
		return ret;
	}
	get_page(page);
	/* A shared writable mapping with page_mkwrite needs these set. */
	page->mapping = vmf->vma->vm_file->f_mapping;
	page->index = vmf->pgoff;
	vmf->page = page;
	up_read(&mux.switch_sem);
	return 0;
}

static vm_fault_t muxfb_page_mkwrite(struct vm_fault *vmf)
{
	struct muxfb_vp *vp = vma_vp(vmf->vma);
	vm_fault_t ret;

	down_read(&mux.switch_sem);
	if (vp == mux.fg && mux.real_vm_ops->page_mkwrite) {
		ret = mux.real_vm_ops->page_mkwrite(vmf);
		up_read(&mux.switch_sem);
		return ret;
	}
	up_read(&mux.switch_sem);
	lock_page(vmf->page);
	return VM_FAULT_LOCKED;
}

/* With a deferred-I/O real driver: pages, and its page_mkwrite. */
static const struct vm_operations_struct muxfb_vm_ops = {
	.fault = muxfb_fault,
	.page_mkwrite = muxfb_page_mkwrite,
};

/* With a real framebuffer in video memory: PFN insertion only. */
static const struct vm_operations_struct muxfb_vm_ops_pfn = {
	.fault = muxfb_fault,
};

static int muxfb_mmap(struct fb_info *info, struct vm_area_struct *vma)
{
	struct muxfb_vp *vp = info_vp(info);
	struct address_space *m = vma->vm_file->f_mapping;
	int i, ret = 0;

	if (vma->vm_pgoff + vma_pages(vma) > PAGE_ALIGN(mux.size) >> PAGE_SHIFT)
		return -EINVAL;
	down_write(&mux.switch_sem);
	for (i = 0; i < MUXFB_MAPPINGS; i++) {
		if (vp->mappings[i] == m)
			break;
		if (!vp->mappings[i]) {
			vp->mappings[i] = m;
			break;
		}
	}
	if (i == MUXFB_MAPPINGS) {
		ret = -EMFILE;
		goto out;
	}
	if (mux.real->fbops->fb_mmap) {
		/* Let the real driver set the mapping up (flags, its vm_ops and
		 * private data), then route faults through ours. */
		ret = mux.real->fbops->fb_mmap(mux.real, vma);
		if (ret)
			goto out;
		if (!mux.real_vm_ops)
			mux.real_vm_ops = vma->vm_ops;
		vma->vm_ops = &muxfb_vm_ops;
		/*
		 * Pages of a shared mapping get dirtied through the file's
		 * address_space operations; a device inode has none. Use the
		 * ones fbdev's deferred I/O gave the panel's file (core kernel
		 * code, so they outlive this module).
		 */
		m->a_ops = mux.panel_file->f_mapping->a_ops;
	} else {
		vma->vm_flags |= VM_MIXEDMAP | VM_DONTEXPAND | VM_DONTDUMP;
		vma->vm_page_prot = pgprot_writecombine(vma->vm_page_prot);
		vma->vm_ops = &muxfb_vm_ops_pfn;
	}
out:
	up_write(&mux.switch_sem);
	return ret;
}

/* ------------------------------------------------------------ read/write */

static ssize_t muxfb_read(struct fb_info *info, char __user *buf, size_t count, loff_t *ppos)
{
	struct muxfb_vp *vp = info_vp(info);
	ssize_t ret;

	down_read(&mux.switch_sem);
	if (vp == mux.fg)
		ret = mux.real->fbops->fb_read ?
			mux.real->fbops->fb_read(mux.real, buf, count, ppos) :
			fb_sys_read(mux.real, buf, count, ppos);
	else
		ret = fb_sys_read(info, buf, count, ppos);
	up_read(&mux.switch_sem);
	return ret;
}

static ssize_t muxfb_write(struct fb_info *info, const char __user *buf, size_t count, loff_t *ppos)
{
	struct muxfb_vp *vp = info_vp(info);
	ssize_t ret;

	down_read(&mux.switch_sem);
	if (vp == mux.fg)
		ret = mux.real->fbops->fb_write ?
			mux.real->fbops->fb_write(mux.real, buf, count, ppos) :
			fb_sys_write(mux.real, buf, count, ppos);
	else
		ret = fb_sys_write(info, buf, count, ppos);
	up_read(&mux.switch_sem);
	return ret;
}

/* -------------------------------------------------------- mode, pan, blank */

static int muxfb_check_var(struct fb_var_screeninfo *var, struct fb_info *info)
{
	const struct fb_var_screeninfo *p = &mux.real->var;

	/* The panel's mode is the only mode. */
	if (var->xres != p->xres || var->yres != p->yres ||
	    var->bits_per_pixel != p->bits_per_pixel ||
	    var->xres_virtual > p->xres_virtual || var->yres_virtual > p->yres_virtual ||
	    var->xoffset || var->yoffset)
		return -EINVAL;
	*var = info->var;
	return 0;
}

static int muxfb_set_par(struct fb_info *info)
{
	return 0;
}

static int muxfb_pan_display(struct fb_var_screeninfo *var, struct fb_info *info)
{
	return (var->xoffset || var->yoffset) ? -EINVAL : 0;
}

static int muxfb_blank(int level, struct fb_info *info)
{
	struct muxfb_vp *vp = info_vp(info);
	int ret = 0;

	mutex_lock(&mux.lock);
	vp->blank_level = level;
	vp->blanked = level != FB_BLANK_UNBLANK;
	/* Only the foreground may blank or wake the panel. */
	if (vp == mux.fg && mux.real->fbops->fb_blank) {
		ret = mux.real->fbops->fb_blank(level, mux.real);
		if (!ret)
			mux.panel_blank = level;
		/* Coming back on: show the frame, not a stale scanout. */
		if (!ret && level == FB_BLANK_UNBLANK)
			damage_panel();
	}
	mutex_unlock(&mux.lock);
	return ret;
}

static void muxfb_destroy(struct fb_info *info)
{
	struct muxfb_vp *vp = info_vp(info);

	clear_page_mappings(vp->backing, mux.size);
	vfree(vp->backing);
	kfree(info->pseudo_palette);
	kfree(vp);
	framebuffer_release(info);
}

static const struct fb_ops muxfb_ops = {
	.owner = THIS_MODULE,
	.fb_read = muxfb_read,
	.fb_write = muxfb_write,
	.fb_check_var = muxfb_check_var,
	.fb_set_par = muxfb_set_par,
	.fb_pan_display = muxfb_pan_display,
	.fb_blank = muxfb_blank,
	.fb_mmap = muxfb_mmap,
	.fb_fillrect = sys_fillrect,
	.fb_copyarea = sys_copyarea,
	.fb_imageblit = sys_imageblit,
	.fb_destroy = muxfb_destroy,
};

/* ----------------------------------------------------------------- control */

static int muxfb_create(void)
{
	struct muxfb_vp *vp;
	struct fb_info *info;
	int slot, ret;

	for (slot = 0; slot < MUXFB_MAX && mux.vps[slot]; slot++)
		;
	if (slot == MUXFB_MAX)
		return -ENOSPC;
	vp = kzalloc(sizeof(*vp), GFP_KERNEL);
	if (!vp)
		return -ENOMEM;
	vp->backing = vzalloc(PAGE_ALIGN(mux.size));
	info = framebuffer_alloc(sizeof(vp), NULL);
	if (!vp->backing || !info) {
		ret = -ENOMEM;
		goto fail;
	}
	*(struct muxfb_vp **)info->par = vp;
	vp->info = info;
	info->fbops = &muxfb_ops;
	info->var = mux.real->var;
	info->var.xoffset = 0;
	info->var.yoffset = 0;
	info->var.yres_virtual = info->var.yres;
	info->var.xres_virtual = info->var.xres;
	info->fix = mux.real->fix;
	snprintf(info->fix.id, sizeof(info->fix.id), "mux_fb%d", slot);
	info->fix.smem_start = 0;
	info->fix.smem_len = mux.size;
	info->fix.ypanstep = 0;
	info->fix.ywrapstep = 0;
	info->screen_buffer = vp->backing;
	info->screen_size = mux.size;
	info->flags = FBINFO_DEFAULT | FBINFO_VIRTFB;
	info->pseudo_palette = kcalloc(16, sizeof(u32), GFP_KERNEL);
	if (!info->pseudo_palette) {
		ret = -ENOMEM;
		goto fail;
	}
	ret = register_framebuffer(info);
	if (ret)
		goto fail;
	mux.vps[slot] = vp;
	return info->node;
fail:
	if (info) {
		kfree(info->pseudo_palette);
		framebuffer_release(info);
	}
	vfree(vp->backing);
	kfree(vp);
	return ret;
}

static struct muxfb_vp *find_vp(int node)
{
	int i;

	for (i = 0; i < MUXFB_MAX; i++)
		if (mux.vps[i] && mux.vps[i]->info->node == node)
			return mux.vps[i];
	return NULL;
}

static int muxfb_set_fg(struct muxfb_vp *new)
{
	struct muxfb_vp *old = mux.fg;

	if (old == new)
		return 0;
	down_write(&mux.switch_sem);
	if (old) {
		zap(old);
		/* The old foreground drew into the panel: keep that. */
		copy_from_panel(old->backing);
		if (!real_is_iomem())
			clear_page_mappings(real_screen(), mux.size);
	}
	if (new) {
		zap(new);
		copy_to_panel(new->backing);
	}
	mux.fg = new;
	up_write(&mux.switch_sem);
	/* The panel follows the new foreground's blank state. */
	if (new && mux.real->fbops->fb_blank && new->blank_level != mux.panel_blank) {
		if (!mux.real->fbops->fb_blank(new->blank_level, mux.real))
			mux.panel_blank = new->blank_level;
	}
	return 0;
}

static int muxfb_destroy_node(int node)
{
	struct muxfb_vp *vp = find_vp(node);
	int i;

	if (!vp)
		return -ENOENT;
	if (mux.fg == vp)
		muxfb_set_fg(NULL);
	for (i = 0; i < MUXFB_MAX; i++)
		if (mux.vps[i] == vp)
			mux.vps[i] = NULL;
	zap(vp);
	/* Freed by muxfb_destroy once the last user is gone. */
	unregister_framebuffer(vp->info);
	return 0;
}

static long muxfb_ctl_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	void __user *uarg = (void __user *)arg;
	s32 idx;
	long ret;

	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;
	mutex_lock(&mux.lock);
	switch (cmd) {
	case MUXFB_IOC_CREATE:
		ret = muxfb_create();
		if (ret >= 0) {
			u32 node = ret;

			ret = copy_to_user(uarg, &node, sizeof(node)) ? -EFAULT : 0;
		}
		break;
	case MUXFB_IOC_DESTROY:
		ret = get_user(idx, (s32 __user *)uarg) ? -EFAULT : muxfb_destroy_node(idx);
		break;
	case MUXFB_IOC_SET_FG:
		if (get_user(idx, (s32 __user *)uarg)) {
			ret = -EFAULT;
		} else if (idx < 0) {
			ret = muxfb_set_fg(NULL);
		} else {
			struct muxfb_vp *vp = find_vp(idx);

			ret = vp ? muxfb_set_fg(vp) : -ENOENT;
		}
		break;
	case MUXFB_IOC_GET_FG:
		idx = mux.fg ? mux.fg->info->node : -1;
		ret = put_user(idx, (s32 __user *)uarg) ? -EFAULT : 0;
		break;
	default:
		ret = -ENOTTY;
	}
	mutex_unlock(&mux.lock);
	return ret;
}

static const struct file_operations muxfb_ctl_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = muxfb_ctl_ioctl,
	.compat_ioctl = muxfb_ctl_ioctl,
};

static struct miscdevice muxfb_ctl = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "mux_fb",
	.fops = &muxfb_ctl_fops,
	.mode = 0600,
};

static int __init muxfb_init(void)
{
	int ret;

	mutex_init(&mux.lock);
	init_rwsem(&mux.switch_sem);
	mux.panel_file = filp_open(panel, O_RDWR, 0);
	if (IS_ERR(mux.panel_file)) {
		pr_err("mux_fb: cannot open the panel %s: %ld\n", panel, PTR_ERR(mux.panel_file));
		return PTR_ERR(mux.panel_file);
	}
	/* fbdev keeps the fb_info of an open device here. */
	mux.real = mux.panel_file->private_data;
	if (!mux.real || mux.real->var.bits_per_pixel != 32) {
		pr_err("mux_fb: %s is not a 32 bpp framebuffer\n", panel);
		ret = -EINVAL;
		goto fail;
	}
	mux.size = (size_t)mux.real->fix.line_length * mux.real->var.yres;
	mux.panel_blank = FB_BLANK_UNBLANK;
	ret = misc_register(&muxfb_ctl);
	if (ret)
		goto fail;
	pr_info("mux_fb: multiplexing %s (%s, %ux%u)\n", panel, mux.real->fix.id,
		mux.real->var.xres, mux.real->var.yres);
	return 0;
fail:
	filp_close(mux.panel_file, NULL);
	return ret;
}

static void __exit muxfb_exit(void)
{
	int i;

	misc_deregister(&muxfb_ctl);
	mutex_lock(&mux.lock);
	muxfb_set_fg(NULL);
	for (i = 0; i < MUXFB_MAX; i++)
		if (mux.vps[i])
			muxfb_destroy_node(mux.vps[i]->info->node);
	mutex_unlock(&mux.lock);
	if (!real_is_iomem())
		clear_page_mappings(real_screen(), mux.size);
	filp_close(mux.panel_file, NULL);
}

module_init(muxfb_init);
module_exit(muxfb_exit);
MODULE_DESCRIPTION("cells: per-VP framebuffers multiplexed onto the real one");
MODULE_LICENSE("GPL");
