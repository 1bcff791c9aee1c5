use cml_macros::fhe_model;

fhe_model!(pub Unknown = "../../../../cml-macros/tests/ui/specs/unknown_field.yaml");

fn main() {}
