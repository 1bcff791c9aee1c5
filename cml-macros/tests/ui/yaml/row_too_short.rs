use cml_macros::fhe_model;

fhe_model!(pub Short = "../../../../cml-macros/tests/ui/specs/row_too_short.yaml");

fn main() {}
