//! Connecting to a Ceph cluster and opening an RBD image, as QEMU's
//! `qemu_rbd_connect` / `qemu_rbd_open` do (same options, same error
//! texts), all blocking: this runs on the control thread during
//! `blockdev-add`, and on an iothread once when it opens its own handle.

use std::ffi::{c_char, CString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::sys::eventfd::{EfdFlags, EventFd};
use std::sync::Arc;

use super::sys::{self, Api, ImageInfo, ImageT, IoctxT, RadosT};
use crate::block::error::{BlockError, BlockResult};

/// Options of the `rbd` driver (QEMU's `BlockdevOptionsRbd`).
#[derive(Debug, Clone, Default)]
pub struct RbdOptions {
    /// Pool name.
    pub pool: String,
    /// RADOS namespace inside the pool (`""` or `None`: the default one).
    pub namespace: Option<String>,
    /// Image name.
    pub image: String,
    /// Ceph configuration file (`None`: Ceph's default locations, failures ignored).
    pub conf: Option<String>,
    /// Open this snapshot (read-only).
    pub snapshot: Option<String>,
    /// Ceph user (`id`) to authenticate as (`None`: Ceph's default, `admin`).
    pub user: Option<String>,
    /// `auth-client-required`: `cephx` and/or `none`.
    pub auth_client_required: Vec<String>,
    /// The key, base64-encoded as librados wants it (from a `secret` object).
    pub key: Option<String>,
    /// Monitors (`host`, `port`) overriding the configuration's `mon_host`.
    pub servers: Vec<(String, String)>,
    /// Open read-only.
    pub read_only: bool,
    /// librbd's writeback cache (`cache.direct=off`, QEMU's default).
    pub cache: bool,
}

/// A connection to the cluster and the pool: shared by every image handle
/// of the node, destroyed after the last one closed.
pub(crate) struct Cluster {
    pub(crate) api: &'static Api,
    rados: RadosT,
    ioctx: IoctxT,
    pub(crate) object_size: u64,
    /// The image, shared by every iothread (`None` only while dropping).
    image: Option<Image>,
    /// The eventfd librbd writes when a completion of the image is queued.
    events: OwnedFd,
    pub(crate) description: String,
}

// SAFETY: librados handles are thread-safe (Ceph documents rados_t and
// rados_ioctx_t as usable from any thread); the pointers are only destroyed
// in Drop, when no image handle (each holds an Arc) is left.
unsafe impl Send for Cluster {}
// SAFETY: as for Send; &Cluster only reads the handles.
unsafe impl Sync for Cluster {}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("image", &self.description)
            .finish_non_exhaustive()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The image closes first (rbd_close waits for its requests).
        self.image.take();
        // SAFETY: the image of this ioctx is closed (every iothread's
        // handle held an Arc of the cluster); the handles are not used again.
        unsafe {
            (self.api.rados_ioctx_destroy)(self.ioctx);
            (self.api.rados_shutdown)(self.rados);
        }
    }
}

/// An open `rbd_image_t`; closed on drop.
pub(crate) struct Image {
    pub(crate) ptr: ImageT,
    api: &'static Api,
}

// SAFETY: librbd image handles are thread-safe: every iothread submits to
// the same one, and it is closed once, when the last user has gone.
unsafe impl Send for Image {}
// SAFETY: as for Send: &Image only hands out the pointer librbd synchronises.
unsafe impl Sync for Image {}

impl Drop for Image {
    fn drop(&mut self) {
        // SAFETY: ptr came from rbd_open and is closed once, here; librbd
        // waits for requests still in flight, whose callbacks own their slots.
        let r = unsafe { (self.api.rbd_close)(self.ptr) };
        if r < 0 {
            log::warn!("rbd_close failed: {}", sys::err(r.into()));
        }
    }
}

fn cstr(what: &str, s: &str) -> BlockResult<CString> {
    CString::new(s).map_err(|_| BlockError::Invalid(format!("'{what}' contains a NUL byte")))
}

fn strerror(r: i64) -> String {
    nix::errno::Errno::from_raw(r.unsigned_abs().min(i32::MAX as u64) as i32)
        .desc()
        .to_string()
}

fn failed(what: String, r: i64) -> BlockError {
    BlockError::Invalid(format!("{what}: {}", strerror(r)))
}

/// Connects, opens the pool, namespace and image; returns the cluster
/// (holding the opened image for the first iothread) and the image size.
pub(crate) fn open(o: &RbdOptions) -> BlockResult<(Arc<Cluster>, u64)> {
    let api = sys::api().map_err(|e| BlockError::Invalid(format!("Block driver 'rbd': {e}")))?;
    let user = o.user.as_deref().map(|u| cstr("user", u)).transpose()?;
    let pool = cstr("pool", &o.pool)?;
    let image = cstr("image", &o.image)?;
    let snap = o
        .snapshot
        .as_deref()
        .map(|s| cstr("snapshot", s))
        .transpose()?;
    let mut rados: RadosT = std::ptr::null_mut();
    let uptr = user.as_ref().map_or(std::ptr::null(), |u| u.as_ptr());
    // SAFETY: rados is an out-pointer; uptr is NULL or a C string.
    let r = unsafe { (api.rados_create)(&mut rados, uptr) };
    if r < 0 {
        return Err(failed("error initializing".into(), r.into()));
    }
    let mut guard = RadosGuard {
        api,
        rados,
        ioctx: None,
    };
    configure(api, rados, o)?;
    // SAFETY: rados was created above and is configured.
    let r = unsafe { (api.rados_connect)(rados) };
    if r < 0 {
        return Err(failed("error connecting".into(), r.into()));
    }
    let mut ioctx: IoctxT = std::ptr::null_mut();
    // SAFETY: connected handle, C string, out-pointer.
    let r = unsafe { (api.rados_ioctx_create)(rados, pool.as_ptr(), &mut ioctx) };
    if r < 0 {
        return Err(failed(format!("error opening pool {}", o.pool), r.into()));
    }
    guard.ioctx = Some(ioctx);
    if let Some(ns) = o.namespace.as_deref().filter(|n| !n.is_empty()) {
        let nsc = cstr("namespace", ns)?;
        let mut exists = false;
        // SAFETY: live ioctx, C string, out-pointer.
        let r = unsafe { (api.rbd_namespace_exists)(ioctx, nsc.as_ptr(), &mut exists) };
        if r < 0 {
            return Err(failed("error checking namespace".into(), r.into()));
        }
        if !exists {
            return Err(BlockError::Invalid(format!(
                "namespace '{ns}' does not exist"
            )));
        }
        // SAFETY: live ioctx; librados copies the string.
        unsafe { (api.rados_ioctx_set_namespace)(ioctx, nsc.as_ptr()) };
    }
    let first = open_image(api, ioctx, &image, snap.as_ref(), &o.image)?;
    let mut info = std::mem::MaybeUninit::<ImageInfo>::zeroed();
    // SAFETY: open image; info has the size the call is told.
    let r = unsafe {
        (api.rbd_stat)(
            first.ptr,
            info.as_mut_ptr(),
            std::mem::size_of::<ImageInfo>(),
        )
    };
    if r < 0 {
        return Err(failed(
            format!("error getting image info from {}", o.image),
            r.into(),
        ));
    }
    // SAFETY: rbd_stat filled it (and it started zeroed).
    let info = unsafe { info.assume_init() };
    let events = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .map_err(|e| BlockError::io("rbd eventfd", 0, e.into()))?;
    let events = OwnedFd::from(events);
    // SAFETY: open image; the eventfd outlives it (Cluster closes the image
    // before its fields drop).
    let r = unsafe {
        (api.rbd_set_image_notification)(first.ptr, events.as_raw_fd(), sys::EVENT_TYPE_EVENTFD)
    };
    if r < 0 {
        return Err(failed("rbd_set_image_notification".into(), r.into()));
    }
    std::mem::forget(guard);
    let description = match &o.snapshot {
        Some(s) => format!("{}/{}@{s}", o.pool, o.image),
        None => format!("{}/{}", o.pool, o.image),
    };
    let cluster = Arc::new(Cluster {
        api,
        rados,
        ioctx,
        object_size: info.obj_size.max(512),
        image: Some(first),
        events,
        description,
    });
    Ok((cluster, info.size))
}

/// Shuts down a half-made connection on the error paths of [`open`].
struct RadosGuard {
    api: &'static Api,
    rados: RadosT,
    ioctx: Option<IoctxT>,
}

impl Drop for RadosGuard {
    fn drop(&mut self) {
        // SAFETY: the handles were created by open() and nothing else uses them.
        unsafe {
            if let Some(io) = self.ioctx {
                (self.api.rados_ioctx_destroy)(io);
            }
            (self.api.rados_shutdown)(self.rados);
        }
    }
}

fn set(api: &Api, rados: RadosT, key: &str, value: &str) -> BlockResult<i32> {
    let k = cstr(key, key)?;
    let v = cstr(key, value)?;
    // SAFETY: created handle, two C strings (librados copies them).
    Ok(unsafe { (api.rados_conf_set)(rados, k.as_ptr(), v.as_ptr()) })
}

fn configure(api: &Api, rados: RadosT, o: &RbdOptions) -> BlockResult<()> {
    let conf = o.conf.as_deref().map(|c| cstr("conf", c)).transpose()?;
    let cptr = conf.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: created handle; NULL means Ceph's default search path.
    let r = unsafe { (api.rados_conf_read_file)(rados, cptr) };
    if let (Some(c), true) = (&o.conf, r < 0) {
        return Err(failed(format!("error reading conf file {c}"), r.into()));
    }
    if !o.servers.is_empty() {
        let hosts: Vec<String> = o
            .servers
            .iter()
            .map(|(h, p)| {
                if h.contains(':') {
                    format!("[{h}]:{p}")
                } else {
                    format!("{h}:{p}")
                }
            })
            .collect();
        let r = set(api, rados, "mon_host", &hosts.join(";"))?;
        if r < 0 {
            return Err(failed("Could not set 'mon_host'".into(), r.into()));
        }
    }
    if let Some(key) = &o.key {
        let r = set(api, rados, "key", key)?;
        if r < 0 {
            return Err(failed("Could not set 'key'".into(), r.into()));
        }
    }
    if !o.auth_client_required.is_empty() {
        let r = set(
            api,
            rados,
            "auth_client_required",
            &o.auth_client_required.join(";"),
        )?;
        if r < 0 {
            return Err(failed(
                "Could not set 'auth_client_required'".into(),
                r.into(),
            ));
        }
    }
    // As QEMU: librbd's writeback cache unless `cache.direct`. Setting it
    // can only fail if the option is unknown, and then there is no cache.
    let _ = set(
        api,
        rados,
        "rbd_cache",
        if o.cache { "true" } else { "false" },
    )?;
    Ok(())
}

fn open_image(
    api: &'static Api,
    ioctx: IoctxT,
    image: &CString,
    snap: Option<&CString>,
    name: &str,
) -> BlockResult<Image> {
    let mut ptr: ImageT = std::ptr::null_mut();
    let sptr = snap.map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: live ioctx, C strings, out-pointer.
    let r = unsafe { (api.rbd_open)(ioctx, image.as_ptr(), &mut ptr, sptr) };
    if r < 0 {
        return Err(failed(
            format!("error reading header from {name}"),
            r.into(),
        ));
    }
    Ok(Image { ptr, api })
}

impl Cluster {
    /// The completion eventfd (each iothread polls a dup of it).
    pub(crate) fn events(&self) -> BorrowedFd<'_> {
        self.events.as_fd()
    }

    /// The open image (valid while the cluster lives).
    pub(crate) fn image_ptr(&self) -> ImageT {
        self.image.as_ref().map_or(std::ptr::null_mut(), |i| i.ptr)
    }

    /// Whether block status may come from `rbd_diff_iterate2` (fast-diff
    /// valid, and none of the cases librbd before 1.17 gets wrong for
    /// offsets that are not object-aligned: striping v2, clones).
    pub(crate) fn diff_usable(&self) -> bool {
        let Some(img) = self.image.as_ref() else {
            return false;
        };
        let (mut features, mut flags) = (0u64, 0u64);
        // SAFETY: open image, out-pointers.
        let ok = unsafe {
            (self.api.rbd_get_features)(img.ptr, &mut features) >= 0
                && (self.api.rbd_get_flags)(img.ptr, &mut flags) >= 0
        };
        if !ok
            || features & sys::FEATURE_FAST_DIFF == 0
            || flags & sys::FLAG_FAST_DIFF_INVALID != 0
            || features & sys::FEATURE_STRIPINGV2 != 0
        {
            return false;
        }
        let null = std::ptr::null_mut::<c_char>();
        // SAFETY: open image; zero-sized buffers: only the return code matters.
        let r = unsafe { (self.api.rbd_get_parent_info)(img.ptr, null, 0, null, 0, null, 0) };
        r == -libc::ENOENT
    }
}
