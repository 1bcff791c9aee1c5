use cml_macros::fhe_model;

fhe_model!(pub NanWeight = "../../../../cml-macros/tests/ui/specs/nan_weight.yaml");

fn main() {}
