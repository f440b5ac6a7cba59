//! Metadata-context negotiation tests (LIST/SET rules, ids, scoping).

use super::handshake::{info_payload, meta_payload, negotiated, opt, replies, run, start, FLAGS};
use crate::nbd::proto::consts::*;

fn meta_names(out: &[u8]) -> Vec<(u32, String)> {
    replies(out)
        .into_iter()
        .filter(|r| r.1 == NBD_REP_META_CONTEXT)
        .map(|(_, _, p)| {
            (
                u32::from_be_bytes(p[..4].try_into().unwrap()),
                String::from_utf8(p[4..].to_vec()).unwrap(),
            )
        })
        .collect()
}

fn meta_run(option: u32, queries: &[&str], structured: bool) -> Vec<u8> {
    let mut input = start(FLAGS);
    if structured {
        input.extend(opt(NBD_OPT_STRUCTURED_REPLY, &[]));
    }
    input.extend(opt(option, &meta_payload("disk", queries)));
    run(&input).0
}

#[test]
fn meta_context_listing_rules() {
    let all = |v: &[(u32, &str)]| {
        v.iter()
            .map(|(i, s)| (*i, s.to_string()))
            .collect::<Vec<_>>()
    };
    let l = NBD_OPT_LIST_META_CONTEXT;
    let everything = all(&[
        (0, "base:allocation"),
        (0, "qemu:allocation-depth"),
        (0, "qemu:dirty-bitmap:b1"),
        (0, "qemu:dirty-bitmap:b2"),
    ]);
    assert_eq!(meta_names(&meta_run(l, &[], false)), everything);
    assert_eq!(
        meta_names(&meta_run(l, &["base:", "qemu:"], true)),
        everything
    );
    assert_eq!(
        meta_names(&meta_run(l, &["qemu:dirty-bitmap:"], true)),
        everything[2..].to_vec()
    );
    assert_eq!(
        meta_names(&meta_run(l, &["nbd:x", "base:nope", "qemu:nope"], true)),
        vec![]
    );
    let s = NBD_OPT_SET_META_CONTEXT;
    assert_eq!(
        meta_names(&meta_run(
            s,
            &["base:", "qemu:", "qemu:dirty-bitmap:"],
            true
        )),
        vec![]
    );
    assert_eq!(
        meta_names(&meta_run(
            s,
            &["qemu:allocation-depth", "qemu:dirty-bitmap:b1"],
            true
        )),
        all(&[(1, "qemu:allocation-depth"), (2, "qemu:dirty-bitmap:b1")])
    );
    // SET needs structured replies.
    let r = replies(&meta_run(s, &["base:allocation"], false));
    assert_eq!((r.len(), r[0].1), (1, NBD_REP_ERR_INVALID));
    // Unknown export, truncated payload.
    let mut input = start(FLAGS);
    input.extend(opt(l, &meta_payload("nope", &[])));
    input.extend(opt(l, &meta_payload("disk", &["base:allocation"])[..12]));
    let r: Vec<_> = replies(&run(&input).0).into_iter().map(|r| r.1).collect();
    assert_eq!(r, vec![NBD_REP_ERR_UNKNOWN, NBD_REP_ERR_INVALID]);
}

#[test]
fn meta_contexts_only_kept_for_the_same_export() {
    let mut input = start(FLAGS);
    input.extend(opt(NBD_OPT_STRUCTURED_REPLY, &[]));
    input.extend(opt(
        NBD_OPT_SET_META_CONTEXT,
        &meta_payload("disk", &["base:allocation"]),
    ));
    input.extend(opt(NBD_OPT_GO, &info_payload("", &[])));
    assert!(negotiated(run(&input).2).meta_contexts.is_empty());
    // A failed SET clears an earlier selection.
    let mut input = start(FLAGS);
    input.extend(opt(NBD_OPT_STRUCTURED_REPLY, &[]));
    input.extend(opt(
        NBD_OPT_SET_META_CONTEXT,
        &meta_payload("disk", &["base:allocation"]),
    ));
    input.extend(opt(NBD_OPT_SET_META_CONTEXT, &meta_payload("nope", &[])));
    input.extend(opt(NBD_OPT_GO, &info_payload("disk", &[])));
    assert!(negotiated(run(&input).2).meta_contexts.is_empty());
}
