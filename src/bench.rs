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

/// The CPU's model name (`/proc/cpuinfo`; "unknown CPU" elsewhere) and
/// whether it has AVX-512.
pub fn cpu() -> (String, bool) {
    let name = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    #[cfg(target_arch = "x86_64")]
    let avx512 = std::arch::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    let avx512 = false;
    (name, avx512)
}

/// `cml bench-pbs --calibrate`: measures the cost model's coefficients on
/// this machine (one thread) and returns them as a profile of this CPU
/// (without checks: [`check_profile`] adds them).
#[cfg(feature = "fhe")]
pub fn calibrate(progress: &mut dyn FnMut(usize, usize)) -> cml_runtime::cost::CostProfile {
    use cml_runtime::backend::tfhe::calibrate::calibrate;

    // 700 rotation steps, as real small keys have: keys of real size, so
    // that memory traffic is in the timings.
    let c = calibrate(false, 700, 3, progress);
    let (name, avx512) = cpu();
    cml_runtime::cost::CostProfile::new(&name, avx512, c.model)
}

/// Estimated against measured latency of one lookup per precision, with the
/// parameters the process's cost model picks; adds them to `profile`.
#[cfg(feature = "fhe")]
pub fn check_profile(
    profile: &mut cml_runtime::cost::CostProfile,
    bits: std::ops::RangeInclusive<u32>,
    runs: usize,
    p_fail: PFail,
    mut each: impl FnMut(&PbsBench),
) -> Result<(), Error> {
    for b in bits {
        let bench = bench_pbs(b, runs, p_fail)?;
        profile.checks.push(cml_runtime::cost::ProfileCheck {
            bits: b,
            estimated_ms: bench.params.predicted.pbs_ms,
            measured_ms: bench.pbs_min.as_secs_f64() * 1e3,
        });
        each(&bench);
    }
    Ok(())
}
