//! Deserializers allocate by what they read, not by what the bytes declare:
//! a small file declaring a huge object is refused without allocating it,
//! and keys longer than their parameters allow are refused unread. Peak heap
//! use is measured with a counting allocator (this file's only test, so
//! nothing else allocates meanwhile).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use cml::backend::tfhe::{
    ClientKey, CompressedEvaluationKeys, EncryptedInput, EncryptedOutput, ENVELOPE_SLACK,
};
use cml::encoding::Encoding;
use cml::params::{choose, Needs, PFail};

#[path = "common/small_program.rs"]
mod small_program;

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes allocated at the peak of `f`, above what was live before it.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = CURRENT.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed) - before)
}

/// `bytes` with the length prefix of a `u64` vector of `length` elements
/// (the last little-endian `u64` equal to `length` followed by room for
/// that many elements) replaced by `huge`, cut 64 bytes after it.
fn declare_huge(bytes: &[u8], length: u64, huge: u64) -> Vec<u8> {
    let room = |i: usize| i + 8 + 8 * length as usize <= bytes.len();
    let at = (4..bytes.len() - 8)
        .rev()
        .find(|&i| room(i) && bytes[i..i + 8] == length.to_le_bytes())
        .expect("the length is in the bytes");
    let mut out = bytes[..(at + 8 + 64).min(bytes.len())].to_vec();
    out[at..at + 8].copy_from_slice(&huge.to_le_bytes());
    out
}

#[test]
fn small_files_declaring_huge_objects_are_refused_without_allocating_them() {
    let p = small_program::small_program();
    let a = p.analyze().unwrap();
    let params = choose(&Needs::of(&p, &a), PFail::default()).unwrap();
    let e = Encoding::of(&p, &a);
    let pbs = params.pbs.unwrap();
    let client = ClientKey::generate(&params);
    let keys = client.compressed_evaluation_keys().to_bytes().unwrap();
    let input = client
        .encrypt(&[3, 2], e.inputs(&p))
        .unwrap()
        .to_bytes()
        .unwrap();
    let out_bits = e.outputs(&p);
    let output = client
        .evaluation_keys()
        .run(
            &p,
            &EncryptedInput::from_bytes(&input, 1 << 30, &params).unwrap(),
        )
        .unwrap()
        .to_bytes()
        .unwrap();

    // Honest objects fit their derived bounds, with no more than the slack.
    for (len, max) in [
        (keys.len(), CompressedEvaluationKeys::max_bytes(&params)),
        (input.len(), EncryptedInput::max_bytes(&params, 2)),
        (output.len(), EncryptedOutput::max_bytes(&params, &out_bits)),
    ] {
        assert!(
            len as u64 <= max && max - len as u64 <= ENVELOPE_SLACK + 2 * 64,
            "{len} of {max}"
        );
    }
    // Keys longer than their parameters allow are refused before reading,
    // whatever limit the caller gives.
    let mut long = keys.clone();
    long.resize(CompressedEvaluationKeys::max_bytes(&params) as usize + 1, 0);
    let err = CompressedEvaluationKeys::from_bytes(&long, u64::MAX, &params).unwrap_err();
    assert!(err.to_string().contains("exceed"), "{err}");

    // A few hundred bytes declaring 2^40 values: refused, and the peak heap
    // use stays far below what the declaration asks for.
    let huge = 1u64 << 40;
    let big_n = params.input_polynomial_size as u64;
    let bombs = [
        ("encrypted input", declare_huge(&input, big_n, huge)),
        (
            "evaluation keys (keyswitching key)",
            declare_huge(
                &keys,
                (params.input_lwe_dimension as u64) * u64::from(pbs.ks_level),
                huge,
            ),
        ),
    ];
    for (what, bomb) in bombs {
        assert!(bomb.len() < 2048, "{what}: {} bytes", bomb.len());
        let (result, peak) = peak_of(|| {
            (
                EncryptedInput::from_bytes(&bomb, u64::MAX, &params).is_err(),
                CompressedEvaluationKeys::from_bytes(&bomb, u64::MAX, &params).is_err(),
            )
        });
        assert_eq!(result, (true, true), "{what}");
        assert!(peak < 4 << 20, "{what}: {peak} bytes at the peak");
        eprintln!(
            "{what}: {} bytes declaring 2^40 values, refused, peak heap {peak} bytes",
            bomb.len()
        );
    }
}
