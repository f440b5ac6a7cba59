//! Compressed clusters: raw deflate (qcow2's `zlib` compression type), as
//! QEMU writes them with `qemu-img convert -c`.

use miniz_oxide::inflate::core::{decompress, inflate_flags, DecompressorOxide};
use miniz_oxide::inflate::TINFLStatus;

/// Inflates `input` into all of `out`. As in QEMU, the stream must fill
/// the cluster exactly; bytes after the stream's end (the rest of the last
/// sector) are ignored.
pub(crate) fn inflate_cluster(input: &[u8], out: &mut [u8]) -> Result<(), &'static str> {
    let mut state = Box::<DecompressorOxide>::default();
    let flags = inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
    let (status, _, written) = decompress(&mut state, input, out, 0, flags);
    match status {
        TINFLStatus::Done | TINFLStatus::HasMoreOutput if written == out.len() => Ok(()),
        TINFLStatus::Done | TINFLStatus::HasMoreOutput => Err("compressed cluster too short"),
        _ => Err("compressed cluster is not a valid deflate stream"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflates_stored_block_and_rejects_garbage() {
        // A stored (uncompressed) deflate block: BFINAL=1, BTYPE=00, LEN, NLEN.
        let data = b"qcow2 cluster";
        let mut stream = vec![0x01];
        stream.extend_from_slice(&(data.len() as u16).to_le_bytes());
        stream.extend_from_slice(&(!(data.len() as u16)).to_le_bytes());
        stream.extend_from_slice(data);
        stream.extend_from_slice(&[0xff; 7]);
        let mut out = vec![0u8; data.len()];
        inflate_cluster(&stream, &mut out).expect("inflate");
        assert_eq!(&out, data);
        let mut big = vec![0u8; 64];
        assert!(inflate_cluster(&stream, &mut big).is_err());
        assert!(inflate_cluster(&[0xff; 16], &mut out).is_err());
    }
}
