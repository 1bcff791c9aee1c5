use cml_macros::fhe_model;

fhe_model!(pub Sure = "../../../../cml-macros/tests/ui/specs/tiny.yaml", p_fail = 3);

fn main() {}
