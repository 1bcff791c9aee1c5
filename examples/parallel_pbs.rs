//! Latency of one evaluation with several independent table lookups, which
//! the server runs in parallel (each starts as soon as its input is ready).
//! Compare:
//!
//! ```sh
//! RAYON_NUM_THREADS=1 cargo run --release --example parallel_pbs
//! cargo run --release --example parallel_pbs
//! ```

use std::time::Instant;

use cml::backend::tfhe::ClientKey;
use cml::encoding::Encoding;
use cml::params::{choose, Needs, PFail};
use cml::program::{Interval, Op, Program, Table};

fn main() -> Result<(), cml::Error> {
    // Eight 3-bit inputs, each through its own square table, then summed.
    let k = 8;
    let mut p = Program::new(vec![Interval::new(0, 7); k]);
    let t = p.add_table(Table::from_fn("square", 0..=7, |v| v * v));
    let squares: Vec<usize> = (0..k)
        .map(|i| p.push(Op::Lut { input: i, table: t }))
        .collect();
    let sum = p.push(Op::Linear {
        terms: squares.iter().map(|&s| (s, 1)).collect(),
        constant: 0,
    });
    p.outputs = vec![sum];
    let a = p.analyze()?;
    let e = Encoding::of(&p, &a);
    let params = choose(&Needs::of(&p, &a), PFail::default())?;
    let client = ClientKey::generate(&params);
    let server = client.evaluation_keys();
    let x: Vec<i64> = (0..k as i64).collect();
    let ranges = [a.values[sum].range];
    let mut times = Vec::new();
    for _ in 0..10 {
        let ct = client.encrypt(&x, e.inputs(&p))?;
        let t0 = Instant::now();
        let out = server.run(&p, &ct)?;
        times.push(t0.elapsed());
        assert_eq!(
            client.decrypt(&out, &ranges, &e.outputs(&p))?,
            p.eval_clear(&x)?
        );
    }
    times.sort();
    println!(
        "{k} independent lookups (N = {}), {} threads: median {:.1?} per evaluation",
        params.pbs.map_or(0, |b| b.polynomial_size),
        rayon::current_num_threads(),
        times[times.len() / 2]
    );
    Ok(())
}
