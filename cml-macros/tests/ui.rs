//! Compile-time behaviour of `fhe_model!`: bad specs are compile errors
//! with spans and positions (`.stderr` files), good ones compile.
//!
//! Set `TRYBUILD=overwrite` to rewrite the `.stderr` files after an intended
//! change, then review the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/yaml/*.rs");
    t.compile_fail("tests/ui/dsl/*.rs");
    t.compile_fail("tests/ui/quant/*.rs");
    t.compile_fail("tests/ui/fhe/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
