use cml_macros::fhe_model;

// 37-bit outputs of 16-bit weights cannot fail less than once in 2^1000000000: the noise floor of 64-bit ciphertexts is too high.
fhe_model!(pub Wide = "../../../../cml-macros/tests/ui/specs/wide.yaml", p_fail = -1000000000);

fn main() {}
