use cml_macros::fhe_model;

// Neither input ranges nor training data to calibrate on.
fhe_model!(pub NoRanges = "../../../../cml-macros/tests/ui/specs/no_ranges.yaml");

fn main() {}
