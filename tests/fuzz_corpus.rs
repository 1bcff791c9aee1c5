//! The fuzz targets' committed corpora (`fuzz/corpus/<target>/`: seeds from
//! the bundled files, and every crash found, kept as a regression input),
//! replayed on stable Rust through the same code the targets run
//! (`fuzz/harness.rs`). A panic on any of them fails this test and names
//! the file.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::path::Path;

#[test]
fn every_fuzz_corpus_replays_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (name, target) in harness::TARGETS.iter().chain(harness::FHE_TARGETS) {
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{}: no seeds", dir.display());
        for file in files {
            let bytes = std::fs::read(&file).unwrap();
            let outcome = std::panic::catch_unwind(|| target(&bytes));
            assert!(
                outcome.is_ok(),
                "fuzz target {name} panicked on {}",
                file.display()
            );
        }
        eprintln!("{name}: replayed");
    }
}

/// Writes the seeds of the ciphertext and key targets from the fixed
/// program (`cargo test --release --test fuzz_corpus -- --ignored`); the
/// committed ones were made this way.
#[test]
#[ignore = "writes fuzz/corpus seeds; run by hand"]
fn write_ciphertext_and_key_seeds() {
    let f = harness::fixture();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let input = f
        .client
        .encrypt(&[3, 2], f.encoding.inputs(&f.program))
        .unwrap();
    let output = f.server.run(&f.program, &input).unwrap();
    let seeds = [
        ("encrypted_input", input.to_bytes().unwrap()),
        ("encrypted_output", output.to_bytes().unwrap()),
        ("client_key", f.client.to_bytes().unwrap()),
    ];
    for (name, bytes) in seeds {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("seed.bin"), bytes).unwrap();
    }
    // The keys are patches of the fixture's (see `harness::patched`): none,
    // one byte in each of the last 64 (the seeds live there), and a cut.
    let dir = root.join("evaluation_keys");
    std::fs::create_dir_all(&dir).unwrap();
    let len = f.keys_bytes.len() as u32;
    std::fs::write(dir.join("valid.bin"), u32::MAX.to_le_bytes()).unwrap();
    let mut tail = u32::MAX.to_le_bytes().to_vec();
    for k in 1..=64u32 {
        tail.extend((len - k).to_le_bytes());
        tail.push(0xA5);
    }
    std::fs::write(dir.join("tail.bin"), tail).unwrap();
    std::fs::write(dir.join("cut.bin"), (len / 2).to_le_bytes()).unwrap();
}
