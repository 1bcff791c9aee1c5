//! One programmable bootstrap and its variants: a table lookup, several
//! tables on one input, and exact rounding, each with its scratch space.

use tfhe::core_crypto::fft_impl::fft64::math::fft::Fft;
use tfhe::core_crypto::prelude::*;

use super::{native, EvaluationKeys};
use crate::program::{Interval, Table};

/// Scratch space and keys for table lookups.
pub(super) struct PbsContext<'a> {
    keys: &'a EvaluationKeys,
    fft: Fft,
    buffers: ComputationBuffers,
}

impl<'a> PbsContext<'a> {
    pub(super) fn new(keys: &'a EvaluationKeys) -> Self {
        let bsk = keys.bsk.as_ref().expect("checked by the caller");
        let (fft, buffers) = scratch(bsk);
        Self { keys, fft, buffers }
    }

    /// One table lookup: shift, keyswitch, centered modulus switch, blind
    /// rotation, sample extraction. `(in_bits, out_delta_log)`: the input's
    /// width (the bootstrap's precision) and the output's scale.
    /// `light`: on the light bootstrap key.
    pub(super) fn lookup(
        &mut self,
        ct: &[u64],
        range: Interval,
        (in_bits, out_delta_log): (u32, u32),
        table: &Table,
        light: bool,
    ) -> Vec<u64> {
        let mut shifted = ct.to_vec();
        let last = shifted.len() - 1;
        shifted[last] = shifted[last].wrapping_sub((range.lo as u64).wrapping_shl(64 - in_bits));
        let slots = 1usize << (in_bits - 1);
        let entries: Vec<u64> = (0..slots)
            .map(|i| {
                let v = table.get(range.lo + i as i64).unwrap_or(0);
                (v as u64).wrapping_shl(out_delta_log)
            })
            .collect();
        let acc = self.rotate(shifted, &entries, light);
        self.extract(&acc, 0)
    }

    /// Exact rounding (`Op::Round`): removes the `bits` low bits of a value of
    /// width `in_bits`, one bootstrap per bit, and returns the rounded value
    /// (whose range starts at `out_lo`) at the 2^bits coarser scale.
    pub(super) fn round(&mut self, ct: &[u64], in_bits: u32, bits: u32, out_lo: i64) -> Vec<u64> {
        let delta_log = 64 - in_bits;
        let last = ct.len() - 1;
        // u = v + 2^(bits−1) − out_lo·2^bits ≥ 0; its floor by 2^bits is the
        // rounded value minus out_lo.
        let offset = (1i64 << (bits - 1)).wrapping_sub(out_lo.wrapping_shl(bits));
        let mut u = ct.to_vec();
        u[last] = u[last].wrapping_add((offset as u64).wrapping_shl(delta_log));
        for j in 0..bits {
            // Bit j of u onto the torus's top bit; higher bits wrap away and
            // lower ones are already removed, so the phase is 0 or 1/2.
            let scaled: Vec<u64> = u.iter().map(|x| x.wrapping_shl(in_bits - 1 - j)).collect();
            // A one-slot accumulator of c gives +c for phase 0, −c for 1/2.
            let c = 1u64 << (j + delta_log - 1);
            let signed = self.bootstrap(scaled, &[c]);
            // bit·2^j·Δ = c − signed; subtract it from u.
            for (ui, si) in u.iter_mut().zip(&signed) {
                *ui = ui.wrapping_add(*si);
            }
            u[last] = u[last].wrapping_sub(c);
        }
        // u is now (rounded − out_lo)·2^bits at Δ: the rounded value minus
        // out_lo at the coarser scale. Add out_lo back there.
        u[last] = u[last].wrapping_add((out_lo as u64).wrapping_shl(delta_log + bits));
        u
    }

    /// Keyswitch, centered modulus switch, blind rotation over an
    /// accumulator holding `entries` (one per message slot, already
    /// encoded), sample extraction.
    fn bootstrap(&mut self, ct: Vec<u64>, entries: &[u64]) -> Vec<u64> {
        let acc = self.rotate(ct, entries, false);
        self.extract(&acc, 0)
    }

    /// Several tables on one input in one bootstrap: `k` sub-tables of
    /// `slots / k` entries side by side (`k` rounded up to a power of two),
    /// table `f` read by sample extraction at degree `f·N/k`.
    pub(super) fn lookup_many(
        &mut self,
        ct: &[u64],
        range: Interval,
        in_bits: u32,
        tables: &[(u32, &Table)],
        light: bool,
    ) -> Vec<Vec<u64>> {
        let mut shifted = ct.to_vec();
        let last = shifted.len() - 1;
        shifted[last] = shifted[last].wrapping_sub((range.lo as u64).wrapping_shl(64 - in_bits));
        let slots = 1usize << (in_bits - 1);
        let k = tables.len().next_power_of_two();
        let sub = slots / k;
        let mut entries = vec![0u64; slots];
        for (f, (out_delta_log, table)) in tables.iter().enumerate() {
            for x in 0..sub {
                let v = table.get(range.lo + x as i64).unwrap_or(0);
                entries[f * sub + x] = (v as u64).wrapping_shl(*out_delta_log);
            }
        }
        let acc = self.rotate(shifted, &entries, light);
        let stride = acc.polynomial_size().0 / k;
        (0..tables.len())
            .map(|f| self.extract(&acc, f * stride))
            .collect()
    }

    /// Keyswitch, centered modulus switch and blind rotation (on the light
    /// bootstrap key if `light`): the rotated accumulator.
    fn rotate(&mut self, ct: Vec<u64>, entries: &[u64], light: bool) -> GlweCiphertextOwned<u64> {
        let ksk = self
            .keys
            .ksk
            .as_ref()
            .expect("present with a bootstrap key");
        let bsk = if light {
            self.keys.bsk_light.as_ref()
        } else {
            self.keys.bsk.as_ref()
        }
        .expect("checked by the caller");
        let input = LweCiphertext::from_container(ct, native());
        let mut small = LweCiphertext::new(0u64, ksk.output_lwe_size(), native());
        keyswitch_lwe_ciphertext(ksk, &input, &mut small);
        blind_rotate(bsk, &self.fft, &mut self.buffers, small, entries)
    }

    /// The LWE sample at `degree` of a rotated accumulator.
    fn extract(&self, acc: &GlweCiphertextOwned<u64>, degree: usize) -> Vec<u64> {
        let size = self.keys.params.input_lwe_dimension + 1;
        let mut out = LweCiphertext::new(0u64, LweSize(size), native());
        extract_lwe_sample_from_glwe_ciphertext(acc, &mut out, MonomialDegree(degree));
        out.into_container()
    }
}

/// The FFT plan and scratch buffers for blind rotations with `bsk`.
pub(super) fn scratch(bsk: &FourierLweBootstrapKeyOwned) -> (Fft, ComputationBuffers) {
    let fft = Fft::new(bsk.polynomial_size());
    let mut buffers = ComputationBuffers::new();
    buffers.resize(
        blind_rotate_assign_mem_optimized_requirement::<u64>(
            bsk.glwe_size(),
            bsk.polynomial_size(),
            fft.as_view(),
        )
        .unaligned_bytes_required(),
    );
    (fft, buffers)
}

/// Centered modulus switch of `small` (under the small key) and blind
/// rotation of an accumulator holding `entries`: the rotated accumulator.
pub(super) fn blind_rotate(
    bsk: &FourierLweBootstrapKeyOwned,
    fft: &Fft,
    buffers: &mut ComputationBuffers,
    small: LweCiphertextOwned<u64>,
    entries: &[u64],
) -> GlweCiphertextOwned<u64> {
    let mut acc = accumulator(bsk, entries);
    let log_modulus = bsk.polynomial_size().to_blind_rotation_input_modulus_log();
    let switched =
        lwe_ciphertext_centered_binary_modulus_switch::<u64, usize, _>(small, log_modulus);
    blind_rotate_assign_mem_optimized(&switched, &mut acc, bsk, fft.as_view(), buffers.stack());
    acc
}

/// The blind-rotation accumulator: `entries[i]` (already encoded) in the
/// box of message slot `i`, with the negacyclic half-box rotation.
pub(super) fn accumulator(
    bsk: &FourierLweBootstrapKeyOwned,
    entries: &[u64],
) -> GlweCiphertextOwned<u64> {
    let n = bsk.polynomial_size().0;
    let box_size = n / entries.len();
    let mut body = vec![0u64; n];
    for (i, &e) in entries.iter().enumerate() {
        body[i * box_size..(i + 1) * box_size].fill(e);
    }
    // Negacyclic wrap: the first half box belongs to message 0 from below.
    let half = box_size / 2;
    for a in &mut body[..half] {
        *a = a.wrapping_neg();
    }
    body.rotate_left(half);
    let plaintexts = PlaintextList::from_container(body);
    allocate_and_trivially_encrypt_new_glwe_ciphertext(bsk.glwe_size(), &plaintexts, native())
}
