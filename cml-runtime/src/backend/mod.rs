//! The runners of an integer [`Program`](crate::program::Program).
//!
//! - clear: [`Program::eval_clear`](crate::program::Program::eval_clear), exact
//!   integers, the reference the others must match;
//! - [`simulate`]: the same integers without cryptography, optionally injecting
//!   bootstrap failures at their predicted rate;
//! - [`tfhe`] (feature `fhe`): real TFHE through the `tfhe` crate, with keys
//!   split by role.

pub mod simulate;
#[cfg(feature = "fhe")]
pub mod tfhe;
