//! Our own bindings to the VDUSE uapi (`linux/vduse.h`, API version 0):
//! the structures, the ioctl numbers, and one thin wrapper per ioctl.
//! Nothing else in the driver calls `ioctl(2)`.
//!
//! Layouts are `#[repr(C)]` copies of the kernel's; the `const` asserts at
//! the bottom pin every size, alignment and offset, and `tests::uapi_layout_matches_the_kernel_header`
//! compiles the real header with the C compiler and compares the numbers.
//! Unions are spelled as arrays of the union's size and alignment (the
//! split and packed ring states as `[u16; 4]`, message payloads as
//! `[u64; 16]` / `[u32; 32]`), so no Rust `union` and no unsafe read is
//! needed to use them; [`super::message`] decodes payloads from bytes.
//!
//! # Safety
//!
//! Each wrapper passes `ioctl(2)` a pointer to a value it borrows for the
//! call, of exactly the type whose size the request number encodes (the
//! asserts below tie the two together), so the kernel reads and writes
//! only memory we own. File descriptors are borrowed (`BorrowedFd`), so
//! they are open for the whole call. An fd the kernel returns
//! (`VDUSE_IOTLB_GET_FD`) is new and ours, and is owned at once.

use std::io;
use std::mem::{align_of, offset_of, size_of};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `VDUSE_BASE`, the ioctl type byte.
pub const VDUSE_BASE: u32 = 0x81;
/// `VDUSE_API_VERSION`: the version we speak.
pub const API_VERSION: u64 = 0;
/// `VDUSE_NAME_MAX`: a device name and its NUL.
pub const NAME_MAX: usize = 256;
/// `VIRTIO_ID_BLOCK`.
pub const VIRTIO_ID_BLOCK: u32 = 2;

/// `VDUSE_ACCESS_RO`: the device may only read the region.
pub const ACCESS_RO: u8 = 0x1;
/// `VDUSE_ACCESS_WO`: the device may only write it.
pub const ACCESS_WO: u8 = 0x2;
/// `VDUSE_ACCESS_RW`.
pub const ACCESS_RW: u8 = 0x3;

/// `VDUSE_EVENTFD_DEASSIGN`.
pub const EVENTFD_DEASSIGN: i32 = -1;

/// `enum vduse_req_type`: `VDUSE_GET_VQ_STATE`.
pub const REQ_GET_VQ_STATE: u32 = 0;
/// `VDUSE_SET_STATUS`.
pub const REQ_SET_STATUS: u32 = 1;
/// `VDUSE_UPDATE_IOTLB`.
pub const REQ_UPDATE_IOTLB: u32 = 2;

/// `VDUSE_REQ_RESULT_OK`.
pub const RESULT_OK: u32 = 0;
/// `VDUSE_REQ_RESULT_FAILED`.
pub const RESULT_FAILED: u32 = 1;

/// Bytes of configuration space we may pass to `VDUSE_CREATE_DEV` (the
/// kernel allows a page; virtio-blk needs under 100).
pub const CONFIG_SPACE_MAX: usize = 256;

/// `struct vduse_dev_config` without its flexible `config[]`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct DevConfig {
    pub name: [u8; NAME_MAX],
    pub vendor_id: u32,
    pub device_id: u32,
    pub features: u64,
    pub vq_num: u32,
    pub vq_align: u32,
    pub reserved: [u32; 13],
    pub config_size: u32,
}

/// The `VDUSE_CREATE_DEV` argument: the config followed by
/// `config_size` bytes of configuration space.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CreateDev {
    pub head: DevConfig,
    pub config: [u8; CONFIG_SPACE_MAX],
}

/// `struct vduse_iotlb_entry`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IotlbEntry {
    pub offset: u64,
    pub start: u64,
    pub last: u64,
    pub perm: u8,
}

/// `struct vduse_vq_config`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct VqConfig {
    pub index: u32,
    pub max_size: u16,
    pub reserved: [u16; 13],
}

/// `struct vduse_vq_info`; `state[0]` is `split.avail_index`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VqInfo {
    pub index: u32,
    pub num: u32,
    pub desc_addr: u64,
    pub driver_addr: u64,
    pub device_addr: u64,
    pub state: [u16; 4],
    pub ready: u8,
}

/// `struct vduse_vq_eventfd`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct VqEventfd {
    pub index: u32,
    pub fd: i32,
}

/// `struct vduse_vq_state`; `state[0]` is `split.avail_index`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct VqState {
    pub index: u32,
    pub state: [u16; 4],
}

/// `struct vduse_iova_range`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct IovaRange {
    pub start: u64,
    pub last: u64,
}

/// `struct vduse_dev_request`, read from the device fd.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct DevRequest {
    pub type_: u32,
    pub request_id: u32,
    pub reserved: [u32; 4],
    /// `union { vq_state; s; iova; padding[32] }`.
    pub payload: [u64; 16],
}

/// `struct vduse_dev_response`, written to the device fd.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct DevResponse {
    pub request_id: u32,
    pub result: u32,
    pub reserved: [u32; 4],
    /// `union { vq_state; padding[32] }`.
    pub payload: [u32; 32],
}

/// Bytes of a request on the device fd.
pub const REQUEST_LEN: usize = size_of::<DevRequest>();
/// Bytes of a response.
pub const RESPONSE_LEN: usize = size_of::<DevResponse>();
/// Where the union starts in a request.
pub const REQUEST_PAYLOAD: usize = offset_of!(DevRequest, payload);
/// Where the union starts in a response.
pub const RESPONSE_PAYLOAD: usize = offset_of!(DevResponse, payload);
/// `vq_state.split.avail_index` inside a payload.
pub const VQ_STATE_AVAIL: usize = offset_of!(VqState, state);
/// `iova.last` inside a payload.
pub const IOVA_LAST: usize = offset_of!(IovaRange, last);

// asm-generic `_IOC` (x86, arm, arm64, riscv, s390; not mips/ppc/sparc).
const IOC_NONE: u32 = 0;
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | (VDUSE_BASE << 8) | nr
}

/// `VDUSE_GET_API_VERSION`.
pub const GET_API_VERSION: u32 = ioc(IOC_READ, 0x00, size_of::<u64>());
/// `VDUSE_SET_API_VERSION`.
pub const SET_API_VERSION: u32 = ioc(IOC_WRITE, 0x01, size_of::<u64>());
/// `VDUSE_CREATE_DEV`.
pub const CREATE_DEV: u32 = ioc(IOC_WRITE, 0x02, size_of::<DevConfig>());
/// `VDUSE_DESTROY_DEV`.
pub const DESTROY_DEV: u32 = ioc(IOC_WRITE, 0x03, NAME_MAX);
/// `VDUSE_IOTLB_GET_FD`.
pub const IOTLB_GET_FD: u32 = ioc(IOC_READ | IOC_WRITE, 0x10, size_of::<IotlbEntry>());
/// `VDUSE_DEV_GET_FEATURES`.
pub const DEV_GET_FEATURES: u32 = ioc(IOC_READ, 0x11, size_of::<u64>());
/// `VDUSE_DEV_INJECT_CONFIG_IRQ`.
pub const DEV_INJECT_CONFIG_IRQ: u32 = ioc(IOC_NONE, 0x13, 0);
/// `VDUSE_VQ_SETUP`.
pub const VQ_SETUP: u32 = ioc(IOC_WRITE, 0x14, size_of::<VqConfig>());
/// `VDUSE_VQ_GET_INFO`.
pub const VQ_GET_INFO: u32 = ioc(IOC_READ | IOC_WRITE, 0x15, size_of::<VqInfo>());
/// `VDUSE_VQ_SETUP_KICKFD`.
pub const VQ_SETUP_KICKFD: u32 = ioc(IOC_WRITE, 0x16, size_of::<VqEventfd>());
/// `VDUSE_VQ_INJECT_IRQ`.
pub const VQ_INJECT_IRQ: u32 = ioc(IOC_WRITE, 0x17, size_of::<u32>());

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `VDUSE_GET_API_VERSION` on the control fd.
pub fn get_api_version(control: BorrowedFd<'_>) -> io::Result<u64> {
    let mut v: u64 = 0;
    // SAFETY: GET_API_VERSION writes one u64 (its encoded size) through
    // the pointer, which points at `v`, alive for the call.
    check(unsafe {
        libc::ioctl(
            control.as_raw_fd(),
            GET_API_VERSION as _,
            &mut v as *mut u64,
        )
    })?;
    Ok(v)
}

/// `VDUSE_SET_API_VERSION` on the control fd.
pub fn set_api_version(control: BorrowedFd<'_>, version: u64) -> io::Result<()> {
    // SAFETY: SET_API_VERSION reads one u64 from the pointer, which points
    // at `version`, alive for the call.
    check(unsafe {
        libc::ioctl(
            control.as_raw_fd(),
            SET_API_VERSION as _,
            &version as *const u64,
        )
    })?;
    Ok(())
}

/// `VDUSE_CREATE_DEV` on the control fd.
pub fn create_dev(control: BorrowedFd<'_>, arg: &CreateDev) -> io::Result<()> {
    if arg.head.config_size as usize > CONFIG_SPACE_MAX {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: the kernel reads a `DevConfig` and then `config_size` bytes
    // after it; `arg` is a `CreateDev`, whose `config` array follows the
    // header at the uapi's offset and holds at least `config_size` bytes
    // (checked above). `arg` is borrowed for the call.
    check(unsafe {
        libc::ioctl(
            control.as_raw_fd(),
            CREATE_DEV as _,
            arg as *const CreateDev,
        )
    })?;
    Ok(())
}

/// `VDUSE_DESTROY_DEV` on the control fd.
pub fn destroy_dev(control: BorrowedFd<'_>, name: &[u8; NAME_MAX]) -> io::Result<()> {
    // SAFETY: DESTROY_DEV reads NAME_MAX bytes from the pointer, which
    // points at `name`, an array of exactly that size borrowed for the call.
    check(unsafe { libc::ioctl(control.as_raw_fd(), DESTROY_DEV as _, name.as_ptr()) })?;
    Ok(())
}

/// `VDUSE_IOTLB_GET_FD` on the device fd: the first region overlapping
/// `entry.start..=entry.last`, written back into `entry`, and a new fd to
/// mmap it from.
pub fn iotlb_get_fd(dev: BorrowedFd<'_>, entry: &mut IotlbEntry) -> io::Result<OwnedFd> {
    // SAFETY: IOTLB_GET_FD reads and writes one `IotlbEntry` through the
    // pointer, which points at `entry`, mutably borrowed for the call.
    let fd = check(unsafe {
        libc::ioctl(dev.as_raw_fd(), IOTLB_GET_FD as _, entry as *mut IotlbEntry)
    })?;
    // SAFETY: on success the ioctl returns a new descriptor installed for
    // us (`receive_fd`); nobody else owns it, so owning it here is sound.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `VDUSE_DEV_GET_FEATURES` on the device fd: what the driver accepted.
pub fn dev_get_features(dev: BorrowedFd<'_>) -> io::Result<u64> {
    let mut v: u64 = 0;
    // SAFETY: DEV_GET_FEATURES writes one u64 through the pointer, which
    // points at `v`, alive for the call.
    check(unsafe { libc::ioctl(dev.as_raw_fd(), DEV_GET_FEATURES as _, &mut v as *mut u64) })?;
    Ok(v)
}

/// `VDUSE_DEV_INJECT_CONFIG_IRQ` on the device fd.
pub fn dev_inject_config_irq(dev: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: INJECT_CONFIG_IRQ is `_IO`: it takes no argument and touches
    // no memory of ours.
    check(unsafe { libc::ioctl(dev.as_raw_fd(), DEV_INJECT_CONFIG_IRQ as _) })?;
    Ok(())
}

/// `VDUSE_VQ_SETUP` on the device fd.
pub fn vq_setup(dev: BorrowedFd<'_>, config: &VqConfig) -> io::Result<()> {
    // SAFETY: VQ_SETUP reads one `VqConfig` from the pointer, which points
    // at `config`, borrowed for the call.
    check(unsafe { libc::ioctl(dev.as_raw_fd(), VQ_SETUP as _, config as *const VqConfig) })?;
    Ok(())
}

/// `VDUSE_VQ_GET_INFO` on the device fd (`info.index` says which queue).
pub fn vq_get_info(dev: BorrowedFd<'_>, info: &mut VqInfo) -> io::Result<()> {
    // SAFETY: VQ_GET_INFO reads and writes one `VqInfo` through the
    // pointer, which points at `info`, mutably borrowed for the call.
    check(unsafe { libc::ioctl(dev.as_raw_fd(), VQ_GET_INFO as _, info as *mut VqInfo) })?;
    Ok(())
}

/// `VDUSE_VQ_SETUP_KICKFD` on the device fd (`fd` -1 de-assigns).
pub fn vq_setup_kickfd(dev: BorrowedFd<'_>, arg: &VqEventfd) -> io::Result<()> {
    // SAFETY: VQ_SETUP_KICKFD reads one `VqEventfd` from the pointer,
    // which points at `arg`, borrowed for the call. The kernel takes its
    // own reference to the eventfd named inside, so its lifetime is not
    // ours to keep.
    check(unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            VQ_SETUP_KICKFD as _,
            arg as *const VqEventfd,
        )
    })?;
    Ok(())
}

/// `VDUSE_VQ_INJECT_IRQ` on the device fd.
pub fn vq_inject_irq(dev: BorrowedFd<'_>, index: u32) -> io::Result<()> {
    // SAFETY: VQ_INJECT_IRQ reads one u32 from the pointer, which points
    // at `index`, alive for the call.
    check(unsafe { libc::ioctl(dev.as_raw_fd(), VQ_INJECT_IRQ as _, &index as *const u32) })?;
    Ok(())
}

// The uapi layout (linux/vduse.h, x86-64 and every LP64 ABI we build for).
const _: () = {
    assert!(size_of::<DevConfig>() == 336 && align_of::<DevConfig>() == 8);
    assert!(offset_of!(DevConfig, vendor_id) == 256);
    assert!(offset_of!(DevConfig, device_id) == 260);
    assert!(offset_of!(DevConfig, features) == 264);
    assert!(offset_of!(DevConfig, vq_num) == 272);
    assert!(offset_of!(DevConfig, vq_align) == 276);
    assert!(offset_of!(DevConfig, reserved) == 280);
    assert!(offset_of!(DevConfig, config_size) == 332);
    // The flexible `config[]` starts right after the header.
    assert!(offset_of!(CreateDev, config) == size_of::<DevConfig>());
    assert!(size_of::<IotlbEntry>() == 32 && align_of::<IotlbEntry>() == 8);
    assert!(offset_of!(IotlbEntry, start) == 8);
    assert!(offset_of!(IotlbEntry, last) == 16);
    assert!(offset_of!(IotlbEntry, perm) == 24);
    assert!(size_of::<VqConfig>() == 32 && align_of::<VqConfig>() == 4);
    assert!(offset_of!(VqConfig, max_size) == 4);
    assert!(size_of::<VqInfo>() == 48 && align_of::<VqInfo>() == 8);
    assert!(offset_of!(VqInfo, num) == 4);
    assert!(offset_of!(VqInfo, desc_addr) == 8);
    assert!(offset_of!(VqInfo, driver_addr) == 16);
    assert!(offset_of!(VqInfo, device_addr) == 24);
    assert!(offset_of!(VqInfo, state) == 32);
    assert!(offset_of!(VqInfo, ready) == 40);
    assert!(size_of::<VqEventfd>() == 8);
    assert!(size_of::<VqState>() == 12 && offset_of!(VqState, state) == 4);
    assert!(size_of::<IovaRange>() == 16 && offset_of!(IovaRange, last) == 8);
    assert!(size_of::<DevRequest>() == 152 && align_of::<DevRequest>() == 8);
    assert!(offset_of!(DevRequest, request_id) == 4);
    assert!(offset_of!(DevRequest, payload) == 24);
    assert!(size_of::<DevResponse>() == 152 && align_of::<DevResponse>() == 4);
    assert!(offset_of!(DevResponse, result) == 4);
    assert!(offset_of!(DevResponse, payload) == 24);
    // Request numbers as the header's macros expand them.
    assert!(GET_API_VERSION == 0x8008_8100);
    assert!(SET_API_VERSION == 0x4008_8101);
    assert!(CREATE_DEV == 0x4150_8102);
    assert!(DESTROY_DEV == 0x4100_8103);
    assert!(IOTLB_GET_FD == 0xc020_8110);
    assert!(DEV_GET_FEATURES == 0x8008_8111);
    assert!(DEV_INJECT_CONFIG_IRQ == 0x0000_8113);
    assert!(VQ_SETUP == 0x4020_8114);
    assert!(VQ_GET_INFO == 0xc030_8115);
    assert!(VQ_SETUP_KICKFD == 0x4008_8116);
    assert!(VQ_INJECT_IRQ == 0x4004_8117);
};

/// An anonymous memory file (`memfd_create(2)`), for the tests' stand-in
/// kernel, which hands IOTLB regions over as memfds as the kernel does.
#[cfg(test)]
pub fn memfd(name: &std::ffi::CStr) -> io::Result<std::fs::File> {
    // SAFETY: `name` is a NUL-terminated string borrowed for the call; the
    // kernel copies it and returns a new descriptor, owned at once below.
    let fd = check(unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) })?;
    // SAFETY: `fd` was just created for us and nobody else owns it.
    Ok(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

#[cfg(test)]
mod tests {
    //! `uapi`: the layout asserts above, checked against the installed
    //! `linux/vduse.h` by the C compiler.

    use super::*;
    use std::collections::HashMap;
    use std::process::Command;

    const HEADER: &str = "/usr/include/linux/vduse.h";

    /// `(C expression, our value)`.
    fn ours() -> Vec<(&'static str, u64)> {
        let s = |n: usize| n as u64;
        vec![
            ("VDUSE_API_VERSION", API_VERSION),
            ("VDUSE_BASE", u64::from(VDUSE_BASE)),
            ("VDUSE_NAME_MAX", s(NAME_MAX)),
            ("VDUSE_ACCESS_RO", u64::from(ACCESS_RO)),
            ("VDUSE_ACCESS_WO", u64::from(ACCESS_WO)),
            ("VDUSE_ACCESS_RW", u64::from(ACCESS_RW)),
            ("VDUSE_GET_VQ_STATE", u64::from(REQ_GET_VQ_STATE)),
            ("VDUSE_SET_STATUS", u64::from(REQ_SET_STATUS)),
            ("VDUSE_UPDATE_IOTLB", u64::from(REQ_UPDATE_IOTLB)),
            ("VDUSE_REQ_RESULT_OK", u64::from(RESULT_OK)),
            ("VDUSE_REQ_RESULT_FAILED", u64::from(RESULT_FAILED)),
            ("VDUSE_GET_API_VERSION", u64::from(GET_API_VERSION)),
            ("VDUSE_SET_API_VERSION", u64::from(SET_API_VERSION)),
            ("VDUSE_CREATE_DEV", u64::from(CREATE_DEV)),
            ("VDUSE_DESTROY_DEV", u64::from(DESTROY_DEV)),
            ("VDUSE_IOTLB_GET_FD", u64::from(IOTLB_GET_FD)),
            ("VDUSE_DEV_GET_FEATURES", u64::from(DEV_GET_FEATURES)),
            (
                "VDUSE_DEV_INJECT_CONFIG_IRQ",
                u64::from(DEV_INJECT_CONFIG_IRQ),
            ),
            ("VDUSE_VQ_SETUP", u64::from(VQ_SETUP)),
            ("VDUSE_VQ_GET_INFO", u64::from(VQ_GET_INFO)),
            ("VDUSE_VQ_SETUP_KICKFD", u64::from(VQ_SETUP_KICKFD)),
            ("VDUSE_VQ_INJECT_IRQ", u64::from(VQ_INJECT_IRQ)),
            ("sizeof(struct vduse_dev_config)", s(size_of::<DevConfig>())),
            (
                "offsetof(struct vduse_dev_config, vendor_id)",
                s(offset_of!(DevConfig, vendor_id)),
            ),
            (
                "offsetof(struct vduse_dev_config, device_id)",
                s(offset_of!(DevConfig, device_id)),
            ),
            (
                "offsetof(struct vduse_dev_config, features)",
                s(offset_of!(DevConfig, features)),
            ),
            (
                "offsetof(struct vduse_dev_config, vq_num)",
                s(offset_of!(DevConfig, vq_num)),
            ),
            (
                "offsetof(struct vduse_dev_config, vq_align)",
                s(offset_of!(DevConfig, vq_align)),
            ),
            (
                "offsetof(struct vduse_dev_config, reserved)",
                s(offset_of!(DevConfig, reserved)),
            ),
            (
                "offsetof(struct vduse_dev_config, config_size)",
                s(offset_of!(DevConfig, config_size)),
            ),
            (
                "offsetof(struct vduse_dev_config, config)",
                s(offset_of!(CreateDev, config)),
            ),
            (
                "sizeof(struct vduse_iotlb_entry)",
                s(size_of::<IotlbEntry>()),
            ),
            (
                "offsetof(struct vduse_iotlb_entry, start)",
                s(offset_of!(IotlbEntry, start)),
            ),
            (
                "offsetof(struct vduse_iotlb_entry, last)",
                s(offset_of!(IotlbEntry, last)),
            ),
            (
                "offsetof(struct vduse_iotlb_entry, perm)",
                s(offset_of!(IotlbEntry, perm)),
            ),
            ("sizeof(struct vduse_vq_config)", s(size_of::<VqConfig>())),
            (
                "offsetof(struct vduse_vq_config, max_size)",
                s(offset_of!(VqConfig, max_size)),
            ),
            (
                "offsetof(struct vduse_vq_config, reserved)",
                s(offset_of!(VqConfig, reserved)),
            ),
            ("sizeof(struct vduse_vq_info)", s(size_of::<VqInfo>())),
            (
                "offsetof(struct vduse_vq_info, num)",
                s(offset_of!(VqInfo, num)),
            ),
            (
                "offsetof(struct vduse_vq_info, desc_addr)",
                s(offset_of!(VqInfo, desc_addr)),
            ),
            (
                "offsetof(struct vduse_vq_info, driver_addr)",
                s(offset_of!(VqInfo, driver_addr)),
            ),
            (
                "offsetof(struct vduse_vq_info, device_addr)",
                s(offset_of!(VqInfo, device_addr)),
            ),
            (
                "offsetof(struct vduse_vq_info, split.avail_index)",
                s(offset_of!(VqInfo, state)),
            ),
            (
                "offsetof(struct vduse_vq_info, ready)",
                s(offset_of!(VqInfo, ready)),
            ),
            ("sizeof(struct vduse_vq_eventfd)", s(size_of::<VqEventfd>())),
            (
                "offsetof(struct vduse_vq_eventfd, fd)",
                s(offset_of!(VqEventfd, fd)),
            ),
            ("sizeof(struct vduse_vq_state)", s(size_of::<VqState>())),
            (
                "offsetof(struct vduse_vq_state, split.avail_index)",
                s(offset_of!(VqState, state)),
            ),
            ("sizeof(struct vduse_iova_range)", s(size_of::<IovaRange>())),
            (
                "offsetof(struct vduse_iova_range, last)",
                s(offset_of!(IovaRange, last)),
            ),
            (
                "sizeof(struct vduse_dev_request)",
                s(size_of::<DevRequest>()),
            ),
            (
                "offsetof(struct vduse_dev_request, request_id)",
                s(offset_of!(DevRequest, request_id)),
            ),
            (
                "offsetof(struct vduse_dev_request, vq_state)",
                s(REQUEST_PAYLOAD),
            ),
            (
                "offsetof(struct vduse_dev_request, s.status)",
                s(REQUEST_PAYLOAD),
            ),
            (
                "offsetof(struct vduse_dev_request, iova.last)",
                s(REQUEST_PAYLOAD + IOVA_LAST),
            ),
            (
                "sizeof(struct vduse_dev_response)",
                s(size_of::<DevResponse>()),
            ),
            (
                "offsetof(struct vduse_dev_response, result)",
                s(offset_of!(DevResponse, result)),
            ),
            (
                "offsetof(struct vduse_dev_response, vq_state.split.avail_index)",
                s(RESPONSE_PAYLOAD + VQ_STATE_AVAIL),
            ),
        ]
    }

    #[test]
    fn uapi_layout_matches_the_kernel_header() {
        if !std::path::Path::new(HEADER).exists() {
            eprintln!("SKIP: {HEADER} not installed (linux-libc-dev)");
            return;
        }
        let dir = tempfile::tempdir().expect("dir");
        let src = dir.path().join("uapi.c");
        let exe = dir.path().join("uapi");
        let mut c = String::from(
            "#include <stdio.h>\n#include <stddef.h>\n#include <linux/types.h>\n#include <linux/ioctl.h>\n#include <linux/vduse.h>\nint main(void) {\n",
        );
        for (expr, _) in ours() {
            c.push_str(&format!(
                "printf(\"%s=%llu\\n\", \"{expr}\", (unsigned long long)({expr}));\n"
            ));
        }
        c.push_str("return 0;\n}\n");
        std::fs::write(&src, c).expect("write C");
        let cc = Command::new("cc").arg("-o").arg(&exe).arg(&src).output();
        let Ok(cc) = cc else {
            eprintln!("SKIP: no C compiler");
            return;
        };
        assert!(
            cc.status.success(),
            "{}",
            String::from_utf8_lossy(&cc.stderr)
        );
        let out = Command::new(&exe).output().expect("run");
        let text = String::from_utf8_lossy(&out.stdout);
        let theirs: HashMap<&str, u64> = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
            .collect();
        for (expr, v) in ours() {
            assert_eq!(theirs.get(expr), Some(&v), "{expr}");
        }
    }
}
