//! The rbd backend: an image on the single-node Ceph cluster of the rbd
//! tests (`tests/support/ceph.rs`: one mon, one memstore OSD, cephx user
//! `client.ringstor` with `profile rbd`), filled with data first so reads
//! hit real objects. ringstor and QSD open the same image in turn, with
//! the same options. Server CPU is the whole process, so librbd's own
//! threads are counted.

use std::path::PathBuf;
use std::sync::Arc;

use ringstor_tests::ceph::{ceph_installed, Ceph, CEPH_POOL, CEPH_USER};

use crate::error::{Error, Result};

/// Largest image (the OSD keeps it in memory).
const MAX_MIB: u64 = 256;

/// An image the servers export; the cluster lives as long as this.
#[derive(Clone)]
pub struct RbdImage {
    /// `ceph.conf` of the cluster.
    pub conf: PathBuf,
    /// The user's key, base64, in a file.
    pub key_file: PathBuf,
    /// Ceph user.
    pub user: &'static str,
    /// Pool.
    pub pool: &'static str,
    /// Image name.
    pub image: String,
    _cluster: Arc<Ceph>,
}

impl std::fmt::Debug for RbdImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RbdImage({}/{})", self.pool, self.image)
    }
}

impl RbdImage {
    /// Starts the cluster and makes a filled image of `mib` MiB (at most 256).
    pub fn prepare(mib: u64) -> Result<RbdImage> {
        if !ceph_installed() {
            return Err(Error::msg(
                "Ceph is not installed (apt-get install ceph-mon ceph-osd ceph-common)",
            ));
        }
        let c = std::panic::catch_unwind(Ceph::shared)
            .map_err(|_| Error::msg("the Ceph cluster did not start"))?;
        let mib = mib.clamp(16, MAX_MIB);
        let image = format!("bench{}", std::process::id());
        let spec = format!("{CEPH_POOL}/{image}");
        println!("creating rbd image {spec} of {mib} MiB (written with data)");
        let made = std::panic::catch_unwind(|| {
            c.rbd(&["create", "--size", &format!("{mib}M"), &spec]);
            c.rbd(&[
                "bench",
                "--io-type",
                "write",
                "--io-size",
                "4M",
                "--io-pattern",
                "seq",
                "--io-total",
                &format!("{mib}M"),
                &spec,
            ]);
        });
        made.map_err(|_| Error::msg("could not create the rbd image"))?;
        Ok(RbdImage {
            conf: c.conf.clone(),
            key_file: c.key_file.clone(),
            user: CEPH_USER,
            pool: CEPH_POOL,
            image,
            _cluster: c,
        })
    }
}
