use cml_macros::fhe_model;

fhe_model!(pub Missing = "../../../../cml-macros/tests/ui/specs/does_not_exist.yaml");

fn main() {}
