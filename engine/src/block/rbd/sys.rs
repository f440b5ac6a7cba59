//! The librados / librbd C API, loaded with `dlopen` at the first
//! `blockdev-add driver=rbd`.
//!
//! Loading at run time keeps ringstor building and running on machines
//! without Ceph's libraries (Debian's `librbd1` brings both): only an rbd
//! node fails, with an error that names the missing library. The
//! declarations follow `rados/librados.h` and `rbd/librbd.h` of Ceph 16;
//! every entry point used here has been stable since Ceph 14.
//!
//! # Safety
//!
//! [`Api`] holds raw C function pointers. Callers of each one keep the C
//! contract: valid handles (never used after their close/destroy), valid
//! NUL-terminated strings, buffers that outlive the asynchronous operation
//! (see `image.rs`).

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::OnceLock;

pub(crate) type RadosT = *mut c_void;
pub(crate) type IoctxT = *mut c_void;
pub(crate) type ImageT = *mut c_void;
pub(crate) type CompletionT = *mut c_void;
pub(crate) type Callback = Option<unsafe extern "C" fn(CompletionT, *mut c_void)>;
pub(crate) type DiffCb = unsafe extern "C" fn(u64, usize, c_int, *mut c_void) -> c_int;

/// `EVENT_TYPE_EVENTFD` of `rbd_set_image_notification`.
pub(crate) const EVENT_TYPE_EVENTFD: c_int = 2;
/// `RBD_FEATURE_STRIPINGV2`.
pub(crate) const FEATURE_STRIPINGV2: u64 = 1 << 1;
/// `RBD_FEATURE_FAST_DIFF`.
pub(crate) const FEATURE_FAST_DIFF: u64 = 1 << 4;
/// `RBD_FLAG_FAST_DIFF_INVALID`.
pub(crate) const FLAG_FAST_DIFF_INVALID: u64 = 1 << 1;
/// `RBD_WRITE_ZEROES_FLAG_THICK_PROVISION`: zeroes that stay allocated.
pub(crate) const WRITE_ZEROES_THICK: c_int = 1;

/// `rbd_image_info_t`.
#[repr(C)]
pub(crate) struct ImageInfo {
    pub(crate) size: u64,
    pub(crate) obj_size: u64,
    pub(crate) num_objs: u64,
    pub(crate) order: c_int,
    pub(crate) block_name_prefix: [c_char; 24],
    pub(crate) parent_pool: i64,
    pub(crate) parent_name: [c_char; 96],
}

macro_rules! api {
    ($( $lib:ident $name:ident : fn($($arg:ty),*) $(-> $ret:ty)?; )*) => {
        /// The entry points ringstor uses, resolved once.
        pub(crate) struct Api {
            $( pub(crate) $name: unsafe extern "C" fn($($arg),*) $(-> $ret)?, )*
        }

        impl Api {
            fn resolve(rados: *mut c_void, rbd: *mut c_void) -> Result<Api, String> {
                Ok(Api {
                    $( $name: {
                        let lib = if stringify!($lib) == "rados" { rados } else { rbd };
                        let sym = CString::new(stringify!($name)).map_err(|e| e.to_string())?;
                        // SAFETY: lib is a live handle from dlopen; sym is NUL-terminated.
                        let p = unsafe { libc::dlsym(lib, sym.as_ptr()) };
                        if p.is_null() {
                            return Err(format!("symbol {} missing", stringify!($name)));
                        }
                        // SAFETY: the symbol has this C signature in librados.h /
                        // librbd.h; function and data pointers have one size here.
                        unsafe { std::mem::transmute::<*mut c_void, unsafe extern "C" fn($($arg),*) $(-> $ret)?>(p) }
                    }, )*
                })
            }
        }
    };
}

api! {
    rados rados_create: fn(*mut RadosT, *const c_char) -> c_int;
    rados rados_conf_read_file: fn(RadosT, *const c_char) -> c_int;
    rados rados_conf_set: fn(RadosT, *const c_char, *const c_char) -> c_int;
    rados rados_connect: fn(RadosT) -> c_int;
    rados rados_shutdown: fn(RadosT);
    rados rados_ioctx_create: fn(RadosT, *const c_char, *mut IoctxT) -> c_int;
    rados rados_ioctx_destroy: fn(IoctxT);
    rados rados_ioctx_set_namespace: fn(IoctxT, *const c_char);
    rbd rbd_namespace_exists: fn(IoctxT, *const c_char, *mut bool) -> c_int;
    rbd rbd_open: fn(IoctxT, *const c_char, *mut ImageT, *const c_char) -> c_int;
    rbd rbd_close: fn(ImageT) -> c_int;
    rbd rbd_stat: fn(ImageT, *mut ImageInfo, usize) -> c_int;
    rbd rbd_get_features: fn(ImageT, *mut u64) -> c_int;
    rbd rbd_get_flags: fn(ImageT, *mut u64) -> c_int;
    rbd rbd_get_parent_info: fn(ImageT, *mut c_char, usize, *mut c_char, usize, *mut c_char, usize) -> c_int;
    rbd rbd_resize: fn(ImageT, u64) -> c_int;
    rbd rbd_set_image_notification: fn(ImageT, c_int, c_int) -> c_int;
    rbd rbd_poll_io_events: fn(ImageT, *mut CompletionT, c_int) -> c_int;
    rbd rbd_aio_create_completion: fn(*mut c_void, Callback, *mut CompletionT) -> c_int;
    rbd rbd_aio_get_arg: fn(CompletionT) -> *mut c_void;
    rbd rbd_aio_get_return_value: fn(CompletionT) -> isize;
    rbd rbd_aio_release: fn(CompletionT);
    rbd rbd_aio_read: fn(ImageT, u64, usize, *mut c_char, CompletionT) -> c_int;
    rbd rbd_aio_write: fn(ImageT, u64, usize, *const c_char, CompletionT) -> c_int;
    rbd rbd_aio_discard: fn(ImageT, u64, u64, CompletionT) -> c_int;
    rbd rbd_aio_flush: fn(ImageT, CompletionT) -> c_int;
    rbd rbd_aio_write_zeroes: fn(ImageT, u64, usize, CompletionT, c_int, c_int) -> c_int;
    rbd rbd_diff_iterate2: fn(ImageT, *const c_char, u64, u64, u8, u8, DiffCb, *mut c_void) -> c_int;
}

/// The libraries as installed by Debian's `librbd1` (which depends on `librados2`).
const LIBRADOS: &CStr = c"librados.so.2";
const LIBRBD: &CStr = c"librbd.so.1";

static API: OnceLock<Result<Api, String>> = OnceLock::new();

fn load() -> Result<Api, String> {
    let open = |name: &CStr| {
        // SAFETY: name is NUL-terminated; the handle is never closed, so the
        // resolved pointers stay valid for the life of the process.
        let h = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        if h.is_null() {
            // SAFETY: dlerror returns a thread-local message or NULL.
            let msg = unsafe { libc::dlerror() };
            let why = if msg.is_null() {
                "not found".to_string()
            } else {
                // SAFETY: non-NULL dlerror results are NUL-terminated strings.
                unsafe { CStr::from_ptr(msg) }
                    .to_string_lossy()
                    .into_owned()
            };
            return Err(format!(
                "cannot load {} ({why}); install Debian's librbd1",
                name.to_string_lossy()
            ));
        }
        Ok(h)
    };
    let rados = open(LIBRADOS)?;
    let rbd = open(LIBRBD)?;
    Api::resolve(rados, rbd)
}

/// The API, loading the libraries on first use.
pub(crate) fn api() -> Result<&'static Api, String> {
    API.get_or_init(load).as_ref().map_err(Clone::clone)
}

/// `-errno` from a C call as an `io::Error`.
pub(crate) fn err(r: i64) -> std::io::Error {
    std::io::Error::from_raw_os_error(r.unsigned_abs().min(i32::MAX as u64) as i32)
}
