//! `cml bench-pbs`: key generation, key sizes and the latency of one table
//! lookup (keyswitch + bootstrap) per input precision, with the parameters
//! the optimizer chooses.

use std::time::{Duration, Instant};

use cml_runtime::params::{choose, Needs};
use cml_runtime::program::{Interval, Op, Program, Table};
use cml_runtime::{Error, FheParams, PFail};
use serde::Serialize;

/// `y = t[x]` for `x` in `[0, 2^bits)`, with a non-linear signed table: one PBS.
pub fn table_program(bits: u32) -> Program {
    let hi = (1i64 << bits) - 1;
    let half = 1i64 << (bits - 1);
    let mut p = Program::new(vec![Interval::new(0, hi)]);
    let t = p.add_table(Table::from_fn("square", 0..=hi, move |v| {
        (v * v).rem_euclid(1 << bits) - half
    }));
    let y = p.push(Op::Lut { input: 0, table: t });
    p.outputs = vec![y];
    p
}

/// One precision's measurements.
#[derive(Debug, Clone, Serialize)]
pub struct PbsBench {
    /// Table input bits.
    pub bits: u32,
    /// The chosen parameters.
    pub params: FheParams,
    /// Client key generation plus seeded evaluation keys plus their expansion.
    pub keygen: Duration,
    /// Serialized seeded evaluation keys, bytes.
    pub evaluation_key_bytes: usize,
    /// Median of the single-PBS latencies (one thread).
    pub pbs: Duration,
    /// Fastest single-PBS latency.
    pub pbs_min: Duration,
    /// Lookups that decrypted to the clear table value.
    pub correct: usize,
    /// Lookups run.
    pub runs: usize,
}

/// Measures one precision: `runs` lookups on inputs spread over the table.
#[cfg(feature = "fhe")]
pub fn bench_pbs(bits: u32, runs: usize, p_fail: PFail) -> Result<PbsBench, Error> {
    use cml_runtime::backend::tfhe::ClientKey;

    let program = table_program(bits);
    let analysis = program.analyze()?;
    let params = choose(&Needs::of(&program, &analysis), p_fail)?;
    let start = Instant::now();
    let client = ClientKey::generate(&params);
    let compressed = client.compressed_evaluation_keys();
    let evaluation_key_bytes = compressed.to_bytes()?.len();
    let server = compressed.decompress();
    let keygen = start.elapsed();
    let range = [analysis.values[program.outputs[0]].range];
    let encoding = cml_runtime::encoding::Encoding::of(&program, &analysis);
    let (in_bits, out_bits) = (
        encoding.inputs(&program).to_vec(),
        encoding.outputs(&program),
    );
    let mut times = Vec::with_capacity(runs);
    let mut correct = 0;
    let span = 1i64 << bits;
    for i in 0..runs {
        let x = (i as i64 * 37 + 11).rem_euclid(span);
        let ct = client.encrypt(&[x], &in_bits)?;
        let t = Instant::now();
        let out = server.run(&program, &ct)?;
        times.push(t.elapsed());
        if client.decrypt(&out, &range, &out_bits)? == program.eval_clear(&[x])? {
            correct += 1;
        }
    }
    times.sort();
    Ok(PbsBench {
        bits,
        params,
        keygen,
        evaluation_key_bytes,
        pbs: times[times.len() / 2],
        pbs_min: times[0],
        correct,
        runs,
    })
}
