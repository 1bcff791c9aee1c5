use cml_macros::fhe_model;

fhe_model!(pub Bits = "../../../../cml-macros/tests/ui/specs/bits_out_of_range.yaml");

fn main() {}
