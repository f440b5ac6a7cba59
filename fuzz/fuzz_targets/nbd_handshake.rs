//! Server handshake state machine under arbitrary client bytes.
//!
//! Input layout: byte 0 picks the `NegotiatorConfig` (bit 6: TLS required;
//! after `Outcome::StartTls` the rest of the stream is fed as the
//! decrypted TLS stream), byte 1 seeds how the stream is split into `feed`
//! calls (and how much output is acknowledged each time); the rest is the
//! client byte stream exactly as it would arrive on the socket (the seeds
//! are real/spec client traffic).
//!
//! Invariants: no panic; `consumed <= input`, and less only once finished;
//! output only changes by what `advance_output` removed plus what was
//! appended; the outcome comes once and then `is_finished()`; the server
//! transcript answers exactly the options the client sent (see
//! `ringstor_fuzz::handshake::check_transcript`). Memory stays bounded via
//! libFuzzer's `-malloc_limit_mb`/`-rss_limit_mb` (set by `fuzz/run`).
#![no_main]

use drivers::nbd::proto::consts::GREETING_LEN;
use drivers::nbd::proto::{Negotiator, NegotiatorConfig, Outcome};
use libfuzzer_sys::fuzz_target;
use ringstor_fuzz::handshake::{check_before_tls, check_transcript, TestCatalog};

const BUFFERS: [u32; 8] = [0, 1, 20, 100, 1000, 4096, 64 * 1024, 1 << 20];
const OPTIONS: [u32; 4] = [1, 3, 16, 4096];

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let tls = data[0] & 0x40 != 0;
    let config = if data[0] & 0x80 == 0 {
        NegotiatorConfig {
            tls,
            ..NegotiatorConfig::default()
        }
    } else {
        NegotiatorConfig {
            max_option_buffer: BUFFERS[usize::from(data[0] & 7)],
            max_options: OPTIONS[usize::from((data[0] >> 3) & 3)],
            tls,
        }
    };
    let mut seed = u32::from(data[1]).wrapping_mul(0x9e37_79b9) | 1;
    let stream = &data[2..];
    let cat = TestCatalog;

    let mut n = Negotiator::new(config);
    assert_eq!(n.output().len(), GREETING_LEN);
    n.advance_output(GREETING_LEN);

    let mut transcript = Vec::new();
    let mut pos = 0;
    let mut outcome: Option<Outcome> = None;
    // Where the stream after the TLS upgrade starts, once upgraded.
    let mut upgraded_at: Option<usize> = None;
    loop {
        // xorshift32 for chunk sizes: seed 0 ⇒ feed everything at once.
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let chunk = if data[1] == 0 {
            stream.len() - pos
        } else {
            (seed as usize % 40).min(stream.len() - pos)
        };
        let input = &stream[pos..pos + chunk];
        let before = n.output().to_vec();
        let was_finished = n.is_finished();
        let (used, o) = n.feed(input, &cat);
        assert!(used <= input.len(), "consumed {used} of {}", input.len());
        if o == Some(Outcome::StartTls) {
            assert!(
                tls && upgraded_at.is_none(),
                "StartTls twice or without TLS"
            );
            assert!(!n.is_finished(), "StartTls finished the handshake");
            pos += used;
            transcript.extend_from_slice(n.output());
            n.advance_output(usize::MAX);
            if let Err(e) = check_before_tls(&stream[..pos], &transcript, Some(&Outcome::StartTls))
            {
                panic!("transcript before TLS: {e}");
            }
            assert_eq!(
                n.feed(&stream[pos..], &cat),
                (0, None),
                "fed before tls_started"
            );
            n.tls_started();
            transcript.clear();
            upgraded_at = Some(pos);
            if pos == stream.len() {
                return;
            }
            continue;
        }
        let out = n.output();
        assert!(out.starts_with(&before), "feed rewrote pending output");
        if was_finished {
            assert_eq!((used, &o), (0, &None), "feed after the outcome");
            assert_eq!(out.len(), before.len(), "output after the outcome");
        }
        if let Some(o) = o {
            assert!(outcome.is_none(), "second outcome {o:?}");
            assert!(n.is_finished(), "outcome without is_finished");
            outcome = Some(o);
        } else if !was_finished {
            assert!(!n.is_finished(), "finished without an outcome");
        }
        if used < input.len() {
            assert!(n.is_finished(), "input left over while negotiating");
        }
        pos += used;
        // Acknowledge part or all of the output, as a short write would.
        let ack = if seed & 0x100 != 0 {
            out.len() / 2
        } else {
            out.len()
        };
        let len_before = out.len();
        transcript.extend_from_slice(&out[..ack]);
        n.advance_output(ack);
        assert_eq!(n.output().len(), len_before - ack);
        if n.is_finished() || pos == stream.len() {
            // One more call: must be a no-op once finished.
            if n.is_finished() {
                let (u, o) = n.feed(&stream[pos..], &cat);
                assert_eq!((u, o), (0, None));
            }
            break;
        }
    }
    transcript.extend_from_slice(n.output());
    n.advance_output(usize::MAX);
    assert!(n.output().is_empty());
    let checked = match upgraded_at {
        // After the upgrade the stream has no client flags: give the
        // checker four, as at the start of a plaintext handshake.
        Some(at) => {
            let mut after = vec![0u8; 4];
            after.extend_from_slice(&stream[at..pos]);
            check_transcript(&after, &transcript, outcome.as_ref(), &cat)
        }
        None if tls => check_before_tls(&stream[..pos], &transcript, outcome.as_ref()),
        None => check_transcript(&stream[..pos], &transcript, outcome.as_ref(), &cat),
    };
    if let Err(e) = checked {
        panic!("handshake transcript check failed: {e}; outcome {outcome:?}");
    }
});
