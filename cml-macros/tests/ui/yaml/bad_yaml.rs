use cml_macros::fhe_model;

fhe_model!(pub BadYaml = "../../../../cml-macros/tests/ui/specs/bad_yaml.yaml");

fn main() {}
